"""Verified upload of stored footage to an S3-compatible object store, and retention."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.settings import UploadSettings
    from agent.upload.s3client import S3Client


def client_factory(settings: UploadSettings) -> Callable[[], S3Client]:
    """Clients for the configured store; credentials are read (and checked) now.

    The S3 client and its HTTP stack are imported here, not with the package: every agent
    imports the upload queue's schema, and a dock that does not upload (the default)
    should not carry the client's modules in memory."""
    from agent.upload.credentials import load_credentials
    from agent.upload.s3client import S3Client, S3Config

    creds = load_credentials(settings.credentials_file)
    conf = S3Config(endpoint=settings.endpoint.rstrip("/"), bucket=settings.bucket,
                    access_key=creds.access_key, secret_key=creds.secret_key,
                    region=settings.region, ca_file=settings.ca_file,
                    timeout_s=settings.timeout_s)
    return lambda: S3Client(conf)
