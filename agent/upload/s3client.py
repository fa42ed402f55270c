"""A small blocking S3 client over `http.client`: exactly the calls the uploader needs.

Why not boto3 or obstore: the agent must stay within its memory budget (boto3 alone is
~49 MiB after creating a client), every PUT and part must carry a Content-MD5 the server
verifies (the only end-to-end check Ceph RGW 16 honours; `x-amz-checksum-*` is silently
ignored there), conditional `If-None-Match: *` PUTs, Object Lock headers and resumable
multipart uploads need direct control, and bandwidth sharing needs the body to be sent
in metered chunks. This client holds one part in memory at a time and adds ~1 MiB to the
process. Addressing is path-style (`<endpoint>/<bucket>/<key>`), which every
S3-compatible store supports. Calls block: the uploader runs them in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import os
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.upload import sigv4
from agent.upload.errors import S3Error, S3Unavailable, UploadError

MAX_XML_BYTES = 4 << 20
SEND_CHUNK = 256 << 10
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

Throttle = Callable[[int], None]
Observe = Callable[[memoryview], object]


@dataclass(frozen=True)
class FileRange:
    """A request body read from a file in chunks as it is sent: `length` bytes at
    `offset` of the open descriptor `fd`, through one reused `chunk` buffer. The body is
    never held whole in memory; if the file yields other bytes than were hashed for the
    Content-MD5 the store refuses them (BadDigest)."""

    fd: int
    offset: int
    length: int
    chunk: bytearray

    def __len__(self) -> int:
        return self.length

    def chunks(self) -> Iterator[memoryview]:
        view = memoryview(self.chunk)
        pos, end = self.offset, self.offset + self.length
        while pos < end:
            n = os.preadv(self.fd, [view[:min(len(view), end - pos)]], pos)
            if n <= 0:
                raise UploadError(f"file ended {end - pos} bytes early while being sent")
            yield view[:n]
            pos += n


Body = bytes | memoryview | FileRange


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # http(s)://host[:port]
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    ca_file: Path | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without quotes
    metadata: Mapping[str, str]
    version_id: str | None
    lock_mode: str | None
    lock_until: str | None


@dataclass(frozen=True)
class Part:
    number: int
    etag: str  # without quotes
    size: int


def md5_b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _text(node: ET.Element | None, name: str) -> str:
    if node is None:
        return ""
    found = node.find(_NS + name)
    if found is None:
        found = node.find(name)
    return (found.text or "") if found is not None else ""


def _parse(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)  # noqa: S314 - bounded answer of the configured store
    except ET.ParseError as exc:
        raise UploadError(f"object store sent malformed XML: {exc}") from exc


class S3Client:
    """Blocking, not thread-safe: use one per thread."""

    def __init__(self, config: S3Config) -> None:
        url = urlsplit(config.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UploadError(f"endpoint {config.endpoint!r} must be http(s)://host[:port]")
        self.config = config
        self._tls = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._tls else 80)
        default_port = self._port == (443 if self._tls else 80)
        self._host_header = url.netloc if not default_port else self._host
        self._ssl: ssl.SSLContext | None = None
        if self._tls:
            self._ssl = ssl.create_default_context(
                cafile=str(config.ca_file) if config.ca_file else None)
        self._conn: http.client.HTTPConnection | None = None

    # -- transport ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; safe from another thread, where it also wakes a request
        blocked on the socket (shutdown, not only close)."""
        conn = self._conn
        self._conn = None
        if conn is not None:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            t = self.config.timeout_s
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=t,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=t)
        return self._conn

    def _path(self, key: str | None) -> str:
        path = "/" + self.config.bucket
        if key is not None:
            path += "/" + key
        return sigv4.uri_encode(path, keep_slash=True)

    def request(
        self,
        method: str,
        key: str | None,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        throttle: Throttle | None = None,
        observe: Observe | None = None,
        op: str = "",
        ok: tuple[int, ...] = (200,),
        read_body: bool = True,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        q = dict(query or {})
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["content-length"] = str(len(body))
        signed = sigv4.sign(method=method, host=self._host_header, path=self._path(key),
                            query=q, headers=hdrs, access_key=self.config.access_key,
                            secret_key=self.config.secret_key, region=self.config.region,
                            now=dt.datetime.now(dt.UTC))
        target = self._path(key)
        if q:
            target += "?" + sigv4.canonical_query(q)
        try:
            conn = self._connection()
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in signed.items():
                conn.putheader(name, value)
            conn.endheaders()
            if len(body or b""):
                assert body is not None
                for chunk in body.chunks() if isinstance(body, FileRange) else _chunks(body):
                    if throttle is not None:
                        throttle(len(chunk))
                    if observe is not None:
                        observe(chunk)  # e.g. hashing, overlapped with the transfer
                    conn.send(chunk)
            resp = conn.getresponse()
            data = b""
            if read_body or resp.status not in ok:
                data = resp.read(MAX_XML_BYTES + 1)
            if len(data) > MAX_XML_BYTES:
                raise S3Unavailable(f"{op}: answer larger than {MAX_XML_BYTES} bytes")
            resp.read()  # drain, keep the connection reusable
            if resp.will_close:
                self.close()
        except (TimeoutError, OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self.close()
            raise S3Unavailable(f"{op or method}: {type(exc).__name__}: {exc}") from exc
        if resp.status not in ok:
            code, message = resp.reason, ""
            if data.strip().startswith(b"<"):
                try:
                    root = _parse(data)
                    code = _text(root, "Code") or code
                    message = _text(root, "Message")
                except UploadError:
                    pass
            raise S3Error(resp.status, code, message, op=op or method)
        return resp.status, resp.headers, data

    # -- objects --------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            _, h, _ = self.request("HEAD", key, op="HEAD", read_body=False)
        except S3Error as exc:
            if exc.status == 404:
                return None
            raise
        meta = {k.lower()[len("x-amz-meta-"):]: v for k, v in h.items()
                if k.lower().startswith("x-amz-meta-")}
        return ObjectInfo(key=key, size=int(h.get("content-length", "0")),
                          etag=h.get("etag", "").strip('"'), metadata=meta,
                          version_id=h.get("x-amz-version-id"),
                          lock_mode=h.get("x-amz-object-lock-mode"),
                          lock_until=h.get("x-amz-object-lock-retain-until-date"))

    def put(self, key: str, body: Body, md5_hex: str, headers: Mapping[str, str], *,
            if_none_match: bool = True, throttle: Throttle | None = None,
            observe: Observe | None = None) -> str:
        """Single PUT, verified by the server against Content-MD5; returns the ETag."""
        h = {**headers, "content-md5": md5_b64(md5_hex)}
        if if_none_match:
            h["if-none-match"] = "*"
        _, resp, _ = self.request("PUT", key, headers=h, body=body, throttle=throttle,
                                  observe=observe,
                                  op="PUT")
        return resp.get("etag", "").strip('"')

    def stream(self, key: str, sink: Callable[[bytes], None], *,
               chunk: int = 1 << 20) -> int:
        """GET an object and feed it to `sink` in chunks; returns the byte count."""
        signed = sigv4.sign(method="GET", host=self._host_header, path=self._path(key),
                            query={}, headers={}, access_key=self.config.access_key,
                            secret_key=self.config.secret_key, region=self.config.region,
                            now=dt.datetime.now(dt.UTC))
        total = 0
        try:
            conn = self._connection()
            conn.putrequest("GET", self._path(key), skip_host=True,
                            skip_accept_encoding=True)
            for name, value in signed.items():
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            if resp.status != 200:
                data = resp.read(MAX_XML_BYTES)
                self.close()
                root = _parse(data) if data.strip().startswith(b"<") else None
                raise S3Error(resp.status, _text(root, "Code") or resp.reason,
                              _text(root, "Message"), op="GET")
            while block := resp.read(chunk):
                sink(block)
                total += len(block)
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self.close()
            raise S3Unavailable(f"GET: {type(exc).__name__}: {exc}") from exc
        return total

    def delete(self, key: str, *, version_id: str | None = None,
               bypass_governance: bool = False) -> None:
        q = {} if version_id is None else {"versionId": version_id}
        h = {"x-amz-bypass-governance-retention": "true"} if bypass_governance else {}
        self.request("DELETE", key, query=q, headers=h, op="DELETE", ok=(200, 204))

    # -- multipart ------------------------------------------------------------------------

    def create_multipart(self, key: str, headers: Mapping[str, str]) -> str:
        _, _, data = self.request("POST", key, query={"uploads": ""}, headers=headers,
                                  op="CreateMultipartUpload")
        upload_id = _text(_parse(data), "UploadId")
        if not upload_id:
            raise UploadError("CreateMultipartUpload answered without an UploadId")
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, body: Body,
                    md5_hex: str,
                    *, throttle: Throttle | None = None,
                    observe: Observe | None = None) -> str:
        _, h, _ = self.request("PUT", key, query={"partNumber": str(number),
                                                  "uploadId": upload_id},
                               headers={"content-md5": md5_b64(md5_hex)}, body=body,
                               throttle=throttle, observe=observe,
                               op=f"UploadPart {number}")
        return h.get("etag", "").strip('"')

    def list_parts(self, key: str, upload_id: str) -> list[Part]:
        parts: list[Part] = []
        marker = "0"
        while True:
            _, _, data = self.request("GET", key, query={"uploadId": upload_id,
                                                         "part-number-marker": marker},
                                      op="ListParts")
            root = _parse(data)
            for p in root.iter(_NS + "Part"):
                parts.append(Part(int(_text(p, "PartNumber")), _text(p, "ETag").strip('"'),
                                  int(_text(p, "Size") or 0)))
            if _text(root, "IsTruncated") != "true":
                return parts
            marker = _text(root, "NextPartNumberMarker")

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]
                           ) -> None:
        xml = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>\"{e}\"</ETag></Part>"
                      for n, e in parts)
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        _, _, data = self.request("POST", key, query={"uploadId": upload_id},
                                  headers={"content-md5": md5_b64(
                                      hashlib.md5(body).hexdigest())},  # noqa: S324
                                  body=body, op="CompleteMultipartUpload")
        # An error may come as 200 with an <Error> body once the server started answering.
        if b"<Error>" in data:
            root = _parse(data)
            raise S3Error(500, _text(root, "Code"), _text(root, "Message"),
                          op="CompleteMultipartUpload")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.request("DELETE", key, query={"uploadId": upload_id},
                         op="AbortMultipartUpload", ok=(200, 204))
        except S3Error as exc:
            if exc.status != 404:
                raise

    def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        _, _, data = self.request("GET", None, query={"uploads": "", "prefix": prefix},
                                  op="ListMultipartUploads")
        root = _parse(data)
        return [(_text(u, "Key"), _text(u, "UploadId")) for u in root.iter(_NS + "Upload")]

    def put_retention(self, key: str, version_id: str | None, mode: str, until: str) -> None:
        """Object Lock retention on one version (RGW 16 ignores the lock headers of
        CreateMultipartUpload, so multipart objects get it this way)."""
        body = (f'<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>{mode}'
                f"</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>").encode()
        q = {"retention": ""}
        if version_id is not None:
            q["versionId"] = version_id
        self.request("PUT", key, query=q, body=body, op="PutObjectRetention",
                     headers={"content-md5": md5_b64(hashlib.md5(body).hexdigest())})  # noqa: S324

    # -- bucket ---------------------------------------------------------------------------

    def object_lock_enabled(self) -> bool:
        try:
            _, _, data = self.request("GET", None, query={"object-lock": ""},
                                      op="GetObjectLockConfiguration")
        except S3Error as exc:
            # no lock configuration (404), or not ours to read (403): the bucket's own
            # default retention, if any, still applies
            if exc.status in (400, 403, 404):
                return False
            raise
        return _text(_parse(data), "ObjectLockEnabled") == "Enabled"

    def create_bucket(self, *, object_lock: bool = False) -> None:
        """Create the bucket (tests, demo); an existing bucket we own is fine."""
        h = {"x-amz-bucket-object-lock-enabled": "true"} if object_lock else {}
        try:
            self.request("PUT", None, headers=h, op="CreateBucket")
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise


def _chunks(body: bytes | memoryview) -> Iterator[memoryview]:
    view = memoryview(body)
    for i in range(0, len(view), SEND_CHUNK):
        yield view[i:i + SEND_CHUNK]
