"""AWS Signature Version 4 for S3 requests: pure functions, no I/O.

The payload is not hashed into the signature (`UNSIGNED-PAYLOAD`); every request that
carries a body signs its `Content-MD5` header instead, which the server checks against
the bytes it received (400 BadDigest), so the body is still bound to the signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def uri_encode(text: str, *, keep_slash: bool) -> str:
    """RFC 3986 encoding as SigV4 wants it (unreserved characters kept)."""
    return quote(text, safe="/~" if keep_slash else "~")


def canonical_query(params: Mapping[str, str]) -> str:
    items = sorted((uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False))
                   for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in items)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    access_key: str,
    secret_key: str,
    region: str,
    now: dt.datetime,
    payload_hash: str = UNSIGNED_PAYLOAD,
) -> dict[str, str]:
    """The request's headers plus `Host`, `x-amz-date`, `x-amz-content-sha256` and
    `Authorization`. `path` is the already URI-encoded absolute path."""
    amz_date = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    out = {k.lower(): " ".join(str(v).strip().split()) for k, v in headers.items()}
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    names = sorted(out)
    canonical_headers = "".join(f"{n}:{out[n]}\n" for n in names)
    signed = ";".join(names)
    creq = "\n".join([method, path, canonical_query(query), canonical_headers, signed,
                      payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(creq.encode("utf-8")).hexdigest()])
    sig = hmac.new(signing_key(secret_key, day, region), to_sign.encode("utf-8"),
                   hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                            f"SignedHeaders={signed}, Signature={sig}")
    return out
