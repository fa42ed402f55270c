"""Errors of the custody store (ledger, evidence index, signing, faults)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error raised by the custody store modules."""


class CanonicalError(StoreError, ValueError):
    """A value cannot be encoded canonically (float NaN, unsafe integer, non-str key...)."""


class LedgerError(StoreError):
    """A ledger entry was refused (bad kind, bad data) or the ledger is unusable."""


class LayoutError(StoreError, ValueError):
    """An evidence path component or stored path is not acceptable."""


class EvidenceError(StoreError):
    """An evidence index operation was refused (unknown file, bad record)."""


class SigningError(StoreError):
    """The checkpoint signing key cannot be created, read or trusted."""


class TableError(StoreError):
    """A statement names a column or operator its table does not declare."""
