"""Port paths, bay resolution and the debounce deadlines."""

from __future__ import annotations

import pytest

from agent.devices.debounce import Debouncer
from agent.devices.errors import DeviceConfigError
from agent.devices.usb_ports import BayMap, UsbPort, port_of, usb_device_devpath

PI4 = "/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb1"
PC = "/devices/pci0000:00/0000:00:14.0/usb3"


def test_port_of_usb_devices() -> None:
    assert port_of(f"{PI4}/1-1/1-1.2") == UsbPort("0000:01:00.0", "1", "1.2")
    assert port_of(f"{PI4}/1-1/1-1.2").name == "1-1.2"  # type: ignore[union-attr]
    assert port_of(PI4) == UsbPort("0000:01:00.0", "1", "")
    assert port_of(f"{PI4}/1-1/1-1.2/1-1.2:1.0") is None  # an interface, not a device


def test_usb_device_of_a_child() -> None:
    tty = f"{PI4}/1-1/1-1.2/1-1.2:1.0/tty/ttyACM0"
    assert usb_device_devpath(tty) == f"{PI4}/1-1/1-1.2"
    assert usb_device_devpath("/devices/virtual/block/loop0") is None


@pytest.mark.parametrize(
    "key",
    [
        "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2",
        "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2:1.0",  # copied from a tty
        "platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.2:1.2-scsi-0:0:0:0",  # from a disk
        "1-1.2",
        f"{PI4}/1-1/1-1.2",
        f"/sys{PI4}/1-1/1-1.2",
    ],
)
def test_bay_key_forms(key: str) -> None:
    bays = BayMap({key: "Bay 2"})
    assert bays.label(UsbPort("0000:01:00.0", "1", "1.2")) == "Bay 2"
    assert bays.label(UsbPort("0000:01:00.0", "1", "1.2.3")) == "Bay 2"  # hub in the bay
    assert bays.label(UsbPort("0000:01:00.0", "1", "1.21")) is None
    assert bays.label(UsbPort("0000:01:00.0", "1", "1.3")) is None


def test_id_path_key_needs_the_same_controller() -> None:
    bays = BayMap({"pci-0000:00:14.0-usb-0:2": "Front"})
    assert bays.label(UsbPort("0000:00:14.0", "3", "2")) == "Front"
    assert bays.label(UsbPort("0000:00:15.0", "3", "2")) is None
    assert port_of(f"{PC}/3-2") == UsbPort("0000:00:14.0", "3", "2")


def test_most_specific_bay_wins_and_unmapped_uses_the_port_name() -> None:
    bays = BayMap({"1-1": "Hub", "1-1.4": "Bay 4"})
    assert bays.label(UsbPort("c", "1", "1.4.1")) == "Bay 4"
    assert bays.label(UsbPort("c", "1", "1.3")) == "Hub"
    assert BayMap({}).label(UsbPort("c", "2", "1.3")) == "2-1.3"


@pytest.mark.parametrize("key", ["bay-1", "usb-0:", "/devices/virtual/tty/tty0", ""])
def test_bad_bay_keys(key: str) -> None:
    with pytest.raises(DeviceConfigError):
        BayMap({key: "x"})


def test_debouncer() -> None:
    d: Debouncer[str] = Debouncer(1.5)
    assert d.hold("a", 10.0) == 11.5
    assert d.hold("a", 11.0) == 11.5  # the window runs from the first loss
    d.hold("b", 10.5)
    assert d.next_deadline() == 11.5
    assert d.pop_due(11.9) == ["a"]
    assert d.cancel("b") and not d.cancel("b")
    assert d.next_deadline() is None and d.pop_due(100.0) == []
    with pytest.raises(ValueError):
        Debouncer(-1)


def test_id_path_bay_covers_both_usb2_and_usb3_buses() -> None:
    bays = BayMap({"platform-xhci-hcd.0-usb-0:1": "Bay 1", "1-2": "Bay 2"})
    assert bays.label(port_of(f"{PI5}/usb1/1-1")) == "Bay 1"  # type: ignore[arg-type]
    assert bays.label(port_of(f"{PI5}/usb2/2-1")) == "Bay 1"  # type: ignore[arg-type]
    assert bays.label(port_of(f"{PI5}/usb2/2-2")) is None  # type: ignore[arg-type]


PI5 = "/devices/platform/axi/1000120000.pcie/1f00200000.usb/xhci-hcd.0"
