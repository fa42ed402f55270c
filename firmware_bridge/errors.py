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


FirmwareBridgeError = BridgeError  # the name the firmware-update contract uses


class FirmwareRefused(DeviceError):
    """The recorder refused a firmware-update step (signature, model, version, hash, offset).

    ``durable_offset`` is the recorder's durable offset of the staged image when it said so
    (resume from there), else None.
    """

    def __init__(self, code: int, detail: str, durable_offset: int | None = None) -> None:
        super().__init__(code, detail)
        self.detail = detail
        self.durable_offset = durable_offset
