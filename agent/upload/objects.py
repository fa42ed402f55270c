"""What an evidence file becomes in the object store: its key, metadata and lock (pure).

Key: `<prefix>/<unit>/<recorder>/<officer>/<date>/<blake3>/<file name>` — the evidence
layout (already sanitised) plus the full content hash, so two different contents never
share a key and a key names exactly one content. Metadata values are percent-encoded
UTF-8 (HTTP headers carry ASCII only); `decode_meta` reverses it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from agent.store.evidence import StoredFile
from agent.store.ledger import iso_utc

META_PREFIX = "x-amz-meta-"
_SAFE = " -_.:@+,;=()[]"


def object_key(prefix: str, f: StoredFile) -> str:
    head, _, name = f.stored_relpath.rpartition("/")
    parts = [p for p in prefix.strip("/").split("/") if p]
    return "/".join([*parts, head, f.blake3_hex, name])


def encode_meta(value: str) -> str:
    return quote(value, safe=_SAFE)


def decode_meta(value: str) -> str:
    return unquote(value)


def metadata(f: StoredFile, dock_id: str, ledger_hash: str) -> dict[str, str]:
    """The custody facts carried by the object (the central side can check them)."""
    values = {
        "blake3": f.blake3_hex,
        "size": str(f.size),
        "dock": dock_id,
        "recorder": f.recorder_serial,
        "officer": f.officer_no,
        "unit": f.unit_no,
        "rec-start": "" if f.rec_start_us is None else iso_utc(f.rec_start_us),
        "rec-end": "" if f.rec_end_us is None else iso_utc(f.rec_end_us),
        "rec-date": f.rec_day.isoformat(),
        "source-name": f.source_display,
        "ledger-entry": ledger_hash,
        "file-id": str(f.id),
    }
    return {META_PREFIX + k: encode_meta(v) for k, v in values.items()}


def lock_headers(f: StoredFile, mode: str, retention_days: int, now_us: int) -> dict[str, str]:
    """Object Lock: WORM until the recording date + retention (at least one day ahead)."""
    start = f.rec_start_us if f.rec_start_us is not None else f.offload_start_us
    until_us = max(start + retention_days * 86_400_000_000, now_us + 86_400_000_000)
    until = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=until_us)
    return {"x-amz-object-lock-mode": mode,
            "x-amz-object-lock-retain-until-date": until.strftime("%Y-%m-%dT%H:%M:%SZ")}


def expected_etag(part_md5s: list[str], multipart: bool) -> str:
    """The ETag S3 gives an object: the MD5 of a single PUT, or for multipart the MD5 of
    the concatenated part MD5s followed by `-<part count>`."""
    if not multipart:
        return part_md5s[0]
    joined = b"".join(bytes.fromhex(m) for m in part_md5s)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_md5s)}"  # noqa: S324


@dataclass(frozen=True)
class Mismatch:
    field: str
    expected: str
    found: str


def compare(found_size: int, found_etag: str, found_meta: Mapping[str, str],
            *, size: int, etag: str | None, blake3_hex: str) -> list[Mismatch]:
    """Differences between a HEAD answer and what the dock uploaded (empty: it matches)."""
    out: list[Mismatch] = []
    if found_size != size:
        out.append(Mismatch("size", str(size), str(found_size)))
    b3 = decode_meta(found_meta.get("blake3", ""))
    if b3 != blake3_hex:
        out.append(Mismatch("blake3", blake3_hex, b3))
    if etag is not None and found_etag != etag:
        out.append(Mismatch("etag", etag, found_etag))
    return out
