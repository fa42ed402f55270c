"""The transport of the S3 client: one keep-alive HTTP(S) connection to the store.

Every request is signed (SigV4), its body sent in metered chunks (a `FileRange` is read
from the file as it goes, never held whole), and the answer read up to a bound; a store
error becomes `S3Error`, a broken connection `S3Unavailable`. Blocking, not thread-safe
except `close`, which also wakes a request blocked on the socket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
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
NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"

Throttle = Callable[[int], None]
Observe = Callable[[memoryview], object]


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


def xml_text(node: ET.Element | None, name: str) -> str:
    if node is None:
        return ""
    found = node.find(NS + name)
    if found is None:
        found = node.find(name)
    return (found.text or "") if found is not None else ""


def parse_xml(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)  # noqa: S314 - bounded answer of the configured store
    except ET.ParseError as exc:
        raise UploadError(f"object store sent malformed XML: {exc}") from exc


def _error(status: int, reason: str, data: bytes, op: str) -> S3Error:
    """The store's error answer: its XML Code and Message when it sent them."""
    code, message = reason, ""
    if data.strip().startswith(b"<"):
        try:
            root = parse_xml(data)
            code = xml_text(root, "Code") or code
            message = xml_text(root, "Message")
        except UploadError:
            pass
    return S3Error(status, code, message, op=op)


class S3Http:
    """Signed requests to one store over one reused connection."""

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

    def _begin(self, method: str, key: str | None, query: Mapping[str, str],
               headers: Mapping[str, str]) -> http.client.HTTPConnection:
        """Sign a request and send its line and headers; the body follows."""
        path = self._path(key)
        signed = sigv4.sign(method=method, host=self._host_header, path=path,
                            query=query, headers=headers, access_key=self.config.access_key,
                            secret_key=self.config.secret_key, region=self.config.region,
                            now=dt.datetime.now(dt.UTC))
        target = path + ("?" + sigv4.canonical_query(query) if query else "")
        conn = self._connection()
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in signed.items():
            conn.putheader(name, value)
        conn.endheaders()
        return conn

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
        hdrs = dict(headers or {})
        if body is not None:
            hdrs["content-length"] = str(len(body))
        try:
            conn = self._begin(method, key, dict(query or {}), hdrs)
            if body is not None and len(body):
                _send(conn, body, throttle, observe)
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
            raise _error(resp.status, resp.reason, data, op or method)
        return resp.status, resp.headers, data

    def stream(self, key: str, sink: Callable[[bytes], None], *,
               chunk: int = 1 << 20) -> int:
        """GET an object and feed it to `sink` in chunks; returns the byte count."""
        total = 0
        try:
            resp = self._begin("GET", key, {}, {}).getresponse()
            if resp.status != 200:
                data = resp.read(MAX_XML_BYTES)
                self.close()
                root = parse_xml(data) if data.strip().startswith(b"<") else None
                raise S3Error(resp.status, xml_text(root, "Code") or resp.reason,
                              xml_text(root, "Message"), op="GET")
            while block := resp.read(chunk):
                sink(block)
                total += len(block)
            if resp.will_close:
                self.close()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self.close()
            raise S3Unavailable(f"GET: {type(exc).__name__}: {exc}") from exc
        return total


def _send(conn: http.client.HTTPConnection, body: Body, throttle: Throttle | None,
          observe: Observe | None) -> None:
    for chunk in body.chunks() if isinstance(body, FileRange) else _chunks(body):
        if throttle is not None:
            throttle(len(chunk))
        if observe is not None:
            observe(chunk)  # e.g. hashing, overlapped with the transfer
        conn.send(chunk)


def _chunks(body: bytes | memoryview) -> Iterator[memoryview]:
    view = memoryview(body)
    for i in range(0, len(view), SEND_CHUNK):
        yield view[i:i + SEND_CHUNK]
