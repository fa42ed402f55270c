"""USB port paths and bay labels.

A bay is a physical USB port. The kernel names the device in it by bus and port chain
("1-1.2": bus 1, root port 1, hub port 2); udev's `ID_PATH` names the same port by its
host controller instead of the bus number ("platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2",
children add ":1.0" for the interface and "-scsi-..." for disks). Bus numbers can change
between boots on some boards, ID_PATH does not, so `[devices.bays]` keys may use either
form (or a sysfs DEVPATH); all are reduced to (controller or bus, port chain) here.

A device is in a bay when its port is the bay's port or below it (a hub inside the bay,
or inside the recorder). With no bays configured every port counts as a bay and the
kernel port name is the label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.devices.errors import DeviceConfigError

_KERNEL_PORT = re.compile(r"^(?P<bus>\d+)-(?P<chain>\d+(?:\.\d+)*)$")
_ROOT_HUB = re.compile(r"^usb(?P<bus>\d+)$")
_ID_PATH = re.compile(
    r"^(?P<prefix>.+?)-usb-\d+:(?P<chain>\d+(?:\.\d+)*)(?::\d+\.\d+)?(?:-.*)?$"
)


@dataclass(frozen=True, slots=True)
class UsbPort:
    """Where a USB device sits: its controller's sysfs name, bus number and port chain."""

    controller: str  # sysfs name of the host controller, e.g. "0000:01:00.0"
    bus: str
    chain: str  # "1.2"; empty for a root hub

    @property
    def name(self) -> str:
        """The kernel's name for the port, as dmesg prints it ("1-1.2")."""
        return f"{self.bus}-{self.chain}" if self.chain else f"usb{self.bus}"


def usb_device_devpath(devpath: str) -> str | None:
    """The DEVPATH of the USB device a device (tty, disk, interface) belongs to, if any."""
    parts = devpath.rstrip("/").split("/")
    for i in range(len(parts) - 1, -1, -1):
        if _KERNEL_PORT.match(parts[i]):
            return "/".join(parts[: i + 1])
    return None


def port_of(devpath: str) -> UsbPort | None:
    """The port of a USB device from its DEVPATH (…/<controller>/usbN/N-a.b)."""
    parts = devpath.rstrip("/").split("/")
    if not parts:
        return None
    last = parts[-1]
    root = _ROOT_HUB.match(last)
    if root:
        controller = parts[-2] if len(parts) >= 2 else ""
        return UsbPort(controller, root["bus"], "")
    m = _KERNEL_PORT.match(last)
    if not m:
        return None
    controller = ""
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == f"usb{m['bus']}":
            controller = parts[i - 1]
            break
    return UsbPort(controller, m["bus"], m["chain"])


@dataclass(frozen=True, slots=True)
class _BayKey:
    label: str
    chain: str
    bus: str | None  # kernel-port keys
    id_path_prefix: str | None  # ID_PATH keys

    def covers(self, port: UsbPort) -> bool:
        if not (port.chain == self.chain or port.chain.startswith(self.chain + ".")):
            return False
        if self.bus is not None:
            return port.bus == self.bus
        assert self.id_path_prefix is not None
        prefix = self.id_path_prefix
        return bool(port.controller) and (
            prefix == port.controller or prefix.endswith("-" + port.controller)
        )


def _parse_bay_key(key: str, label: str) -> _BayKey:
    text = key.strip()
    if text.startswith(("/devices/", "/sys/devices/")):
        usb = usb_device_devpath(text)
        port = port_of(usb) if usb else None
        if port is None or not port.chain:
            raise DeviceConfigError(f"bay {label!r}: {key!r} is not the path of a USB port")
        return _BayKey(label, port.chain, port.bus, None)
    m = _KERNEL_PORT.match(text)
    if m:
        return _BayKey(label, m["chain"], m["bus"], None)
    m = _ID_PATH.match(text)
    if m:
        return _BayKey(label, m["chain"], None, m["prefix"])
    raise DeviceConfigError(
        f"bay {label!r}: {key!r} is neither a udev ID_PATH (…-usb-0:1.2), "
        "a kernel port name (1-1.2) nor a sysfs device path"
    )


class BayMap:
    """Resolves a USB device's port to the operator's bay label."""

    def __init__(self, bays: Mapping[str, str]) -> None:
        keys = [_parse_bay_key(k, v) for k, v in bays.items()]
        # Most specific first: a bay behind another bay's hub wins over the outer one.
        self._keys = sorted(keys, key=lambda k: -len(k.chain.split(".")))

    def label(self, port: UsbPort) -> str | None:
        """The bay label, or None when bays are configured and the port is in none of them."""
        for key in self._keys:
            if key.covers(port):
                return key.label
        return None if self._keys else port.name
