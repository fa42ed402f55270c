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
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from agent.upload.errors import S3Error, UploadError
from agent.upload.s3http import (
    NS,
    Body,
    FileRange,
    Observe,
    S3Config,
    S3Http,
    Throttle,
    parse_xml,
    xml_text,
)


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


class S3Client:
    """The S3 calls the uploader and retention need. Blocking, not thread-safe: use one
    per thread (`close` excepted)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._http = S3Http(config)
        self.request = self._http.request
        self.stream = self._http.stream

    def close(self) -> None:
        """Close the connection; safe from another thread (see `S3Http.close`)."""
        self._http.close()

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

    def delete(self, key: str, *, version_id: str | None = None,
               bypass_governance: bool = False) -> None:
        q = {} if version_id is None else {"versionId": version_id}
        h = {"x-amz-bypass-governance-retention": "true"} if bypass_governance else {}
        self.request("DELETE", key, query=q, headers=h, op="DELETE", ok=(200, 204))

    # -- multipart ------------------------------------------------------------------------

    def create_multipart(self, key: str, headers: Mapping[str, str]) -> str:
        _, _, data = self.request("POST", key, query={"uploads": ""}, headers=headers,
                                  op="CreateMultipartUpload")
        upload_id = xml_text(parse_xml(data), "UploadId")
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
            root = parse_xml(data)
            for p in root.iter(NS + "Part"):
                parts.append(Part(int(xml_text(p, "PartNumber")), xml_text(p, "ETag").strip('"'),
                                  int(xml_text(p, "Size") or 0)))
            if xml_text(root, "IsTruncated") != "true":
                return parts
            marker = xml_text(root, "NextPartNumberMarker")

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
            root = parse_xml(data)
            raise S3Error(500, xml_text(root, "Code"), xml_text(root, "Message"),
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
        root = parse_xml(data)
        return [(xml_text(u, "Key"), xml_text(u, "UploadId")) for u in root.iter(NS + "Upload")]

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
        return xml_text(parse_xml(data), "ObjectLockEnabled") == "Enabled"

    def create_bucket(self, *, object_lock: bool = False) -> None:
        """Create the bucket (tests, demo); an existing bucket we own is fine."""
        h = {"x-amz-bucket-object-lock-enabled": "true"} if object_lock else {}
        try:
            self.request("PUT", None, headers=h, op="CreateBucket")
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise


__all__ = ["Body", "FileRange", "ObjectInfo", "Observe", "Part", "S3Client", "S3Config",
           "Throttle", "md5_b64"]
