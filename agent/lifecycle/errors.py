"""Errors of the evidence lifecycle."""

from __future__ import annotations


class LifecycleError(Exception):
    """Base class: a lifecycle request could not be carried out."""


class AccessRefused(LifecycleError):
    """A view or export was refused (no approver, approver not on the list, bad request)."""


class ExportFailed(LifecycleError):
    """An export started but its package could not be written or verified on the target."""
