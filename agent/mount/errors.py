"""Errors of the mount package."""

from __future__ import annotations


class MountError(Exception):
    """Recorder storage could not be mounted or unmounted."""


class HelperUnavailable(MountError):
    """The privileged mount helper could not be reached or did not answer in time."""


class MountRefused(MountError):
    """The helper (or the directory mounter) refused a request; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ProtocolError(MountError):
    """A malformed request or reply on the helper socket."""
