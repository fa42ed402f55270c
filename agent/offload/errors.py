"""Errors of the offload engine."""

from __future__ import annotations


class OffloadError(Exception):
    """Base of every offload failure."""


class StoreError(OffloadError):
    """The evidence store could not be written."""


class StoreConflictError(StoreError):
    """An uncommitted file under a journalled final name does not match the journal; it
    is left alone for an operator and this one file fails."""


class StoreFullError(StoreError):
    """The evidence disk has no room (admission refused, or ENOSPC while writing)."""


class SourceGoneError(OffloadError):
    """The recorder's storage vanished (unplug): stop, keep the durable partial for resume."""


class CopyStopped(OffloadError):
    """The copy was asked to stop (task cancelled); the durable partial is kept."""


class SourceReadError(OffloadError):
    """A source file could not be read after the configured retries."""


class SourceRefusedError(OffloadError):
    """A source entry is not a regular file we may take (symlink, device, FIFO, ...)."""
