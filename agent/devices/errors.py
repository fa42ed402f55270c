"""Errors of the device-detection package."""

from __future__ import annotations


class DeviceError(Exception):
    """Base class for device-detection errors."""


class DeviceConfigError(DeviceError):
    """The `[devices]` settings cannot be used (bad VID/PID, regex or bay key)."""


class DeviceSourceError(DeviceError):
    """The device source could not start (no udev netlink socket, for example)."""
