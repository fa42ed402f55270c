"""Errors raised by the hardware simulator."""

from __future__ import annotations


class SimError(Exception):
    """Base class of every simulator error."""


class SpecError(SimError):
    """A recorder spec, fault description or scenario file is invalid."""


class BayError(SimError):
    """A bay operation is impossible (unknown bay, bay busy, bay empty)."""


class FuseUnavailable(SimError):
    """A file-layer fault needs FUSE, but /dev/fuse or fusermount3 is missing."""


class MountError(SimError):
    """The fault-injecting FUSE filesystem could not be mounted."""
