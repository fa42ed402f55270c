"""Errors of the dock's firmware handling; each message says what to do."""

from __future__ import annotations


class FirmwareError(Exception):
    """Base class of the firmware package's errors."""


class KeyFileError(FirmwareError):
    """A configured trusted key could not be read or is not an Ed25519 public key."""


class StagingError(FirmwareError):
    """A package was refused at staging (signature, model, version, size, file)."""


class PolicyError(FirmwareError):
    """A policy (config or central command) is malformed."""


class UpdateRefused(FirmwareError):
    """The dock or the recorder refused an update; nothing was changed on the recorder."""
