"""Errors of the docking-session package."""

from __future__ import annotations

from agent.store.faults import FaultCode, Severity


class SessionError(Exception):
    """Base of errors raised by agent.session."""


class SessionFailure(SessionError):
    """A step failed in a way that ends the session's work; becomes one fault record."""

    def __init__(
        self,
        code: FaultCode,
        reason: str,
        *,
        severity: Severity = "error",
        detail: dict[str, object] | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.severity: Severity = severity
        self.detail = detail or {}
