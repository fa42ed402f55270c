"""Exception hierarchy of the firmware bridge.

Everything this package raises on purpose is a ``BridgeError``; callers catch that and
nothing broader.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the firmware bridge raises."""


class ProtocolError(BridgeError):
    """Bytes or values that do not follow the protocol (the codec's own error type)."""


class FrameError(ProtocolError):
    """A frame could not be taken apart: bad COBS, too short, too long, wrong CRC."""


class PayloadError(ProtocolError):
    """A frame was intact but its message type or payload is not valid."""


class FieldError(PayloadError, ValueError):
    """A field value does not fit its wire encoding (too long, out of range, bad bytes)."""


class LinkTimeout(BridgeError):
    """No valid reply arrived within the command's timeout (after any retries)."""


class LinkClosed(BridgeError):
    """The serial port is gone, could not be opened, or the client was closed."""


class AuthRefused(BridgeError):
    """The recorder refused authentication, or failed to prove it knows the fleet secret."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeviceError(BridgeError):
    """The recorder answered a command with an error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"device error {code:#06x}: {message}")
        self.code = code
        self.message = message
