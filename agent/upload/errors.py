"""Errors of the upload package."""

from __future__ import annotations


class UploadError(Exception):
    """Base of every upload and retention error."""


class S3Unavailable(UploadError):
    """The object store could not be reached or did not answer in time (retry later)."""


class S3Error(UploadError):
    """The object store answered with an error status."""

    def __init__(self, status: int, code: str, message: str, *, op: str = "") -> None:
        super().__init__(f"{op}: HTTP {status} {code}: {message}".lstrip(": "))
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        """Server-side trouble (5xx, throttling, timeouts) rather than a refusal."""
        return self.status >= 500 or self.status in (408, 429) or self.code in (
            "SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError")


class UploadStopped(UploadError):
    """The uploader is stopping: the file's transfer ended unfinished, which is no failure
    (its queue row stays as it was, and the next start sends it again)."""


class ObjectConflict(UploadError):
    """The write-once key already holds an object with other content."""


class CredentialsError(UploadError):
    """The store credentials file is missing, unreadable, malformed or too open."""
