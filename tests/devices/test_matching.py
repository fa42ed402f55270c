"""Matching, pairing, rejection and debouncing on udev property sets of real device kinds."""

from __future__ import annotations

from typing import Any

import pytest

from agent.devices.errors import DeviceConfigError
from agent.devices.events import (
    BlockStorage,
    DeviceRejected,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord, is_hub, usb_ids
from agent.settings import AllowedDevice

from .conftest import feed, load, settings

PI4_PREFIX = "platform-fd500000.pcie-pci-0000:01:00.0"


def test_composite_recorder_with_partitioned_vfat(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    events = feed(tracker, fx.plug(), 10.0)
    assert events == [
        RecorderPlugged("BWC10234", "1-1.2", "/dev/ttyACM0", "1d6b:0104", "udev"),
        StorageAppeared(
            "BWC10234", "1-1.2", BlockStorage("/dev/sda1", "vfat", False), "1d6b:0104", False,
            "udev",
        ),
    ]


def test_whole_disk_filesystem_is_storage(tracker: DeviceTracker) -> None:
    events = feed(tracker, load("composite_acm_msc_whole_disk").plug(), 0.0)
    assert [type(e) for e in events] == [RecorderPlugged, StorageAppeared]
    assert events[0].tty_path == "/dev/ttyACM1"
    assert events[1].storage == BlockStorage("/dev/sdb", "vfat", True)


def test_partition_table_disk_waits_for_its_partition(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    records = fx.plug()[:-1]  # everything but the partition
    assert [type(e) for e in feed(tracker, records, 0.0)] == [RecorderPlugged]
    assert [type(e) for e in feed(tracker, [fx.add(fx.child("/dev/sda1"))], 0.1)] == [
        StorageAppeared
    ]


def test_filesystem_reported_by_a_later_change_event(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    part = fx.child("/dev/sda1")
    bare = {k: v for k, v in part.items() if not k.startswith("ID_FS_")}
    first = feed(tracker, [*fx.plug()[:-1], fx.add(bare)], 0.0)
    assert [type(e) for e in first] == [RecorderPlugged]
    later = feed(tracker, [fx.add(part, "change")], 0.5)
    assert later == [
        StorageAppeared(
            "BWC10234", "1-1.2", BlockStorage("/dev/sda1", "vfat", False), "1d6b:0104"
        )
    ]
    assert feed(tracker, [fx.add(part, "change")], 0.6) == []  # same again: no news
    # The medium went away under the partition (filesystem gone): the mount is dead.
    assert feed(tracker, [fx.add(bare, "change")], 0.7) == [StorageRemoved("BWC10234", "1-1.2")]


def test_non_filesystem_usage_is_not_storage(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_whole_disk")
    disk = fx.child("/dev/sdb") | {"ID_FS_TYPE": "crypto_LUKS", "ID_FS_USAGE": "crypto"}
    events = feed(tracker, [*fx.plug()[:-1], fx.add(disk)], 0.0)
    assert [type(e) for e in events] == [RecorderPlugged]


def test_storage_before_tty_is_held_until_the_recorder_is_plugged(
    tracker: DeviceTracker,
) -> None:
    fx = load("composite_acm_msc_partitioned")
    usb, tty, disk, part = fx.plug()
    assert feed(tracker, [usb, disk, part], 0.0) == []
    events = feed(tracker, [tty], 0.1)
    assert [type(e) for e in events] == [RecorderPlugged, StorageAppeared]


def test_usb_serial_recorder_behind_its_own_hub_pairs_by_serial_in_a_bay() -> None:
    tracker = DeviceTracker(settings(bays={f"{PI4_PREFIX}-usb-0:1.4": "Bay 4"}))
    events = feed(tracker, load("ftdi_hub_recorder").plug(), 0.0)
    assert events == [
        RecorderPlugged("BWC20417", "Bay 4", "/dev/ttyUSB0", "0403:6015"),
        StorageAppeared(
            "BWC20417", "Bay 4", BlockStorage("/dev/sdc1", "exfat", False), "0403:6015"
        ),
    ]


def test_same_serial_in_two_unmapped_ports_is_a_duplicate(tracker: DeviceTracker) -> None:
    # Without bays, the two functions sit in different ports and cannot be told apart from
    # two recorders carrying the same serial: the second is refused, never mounted.
    events = feed(tracker, load("ftdi_hub_recorder").plug(), 0.0)
    assert [type(e) for e in events] == [DeviceRejected, RecorderPlugged]
    assert "already docked in bay 1-1.4.1" in events[0].reason
    assert not any(isinstance(e, StorageAppeared) for e in events)


def test_usb_stick_is_rejected_once_and_never_storage(tracker: DeviceTracker) -> None:
    fx = load("usb_stick")
    events = feed(tracker, fx.plug() + fx.plug(), 0.0)  # coldplug and monitor both saw it
    assert events == [
        DeviceRejected(
            "1-1.2", "0781:5581", "4C530001230517114455",
            "USB device 0781:5581 is not in the recorder allowlist",
            fx.usb_devices[0]["DEVPATH"],
        )
    ]
    assert feed(tracker, fx.unplug(), 1.0) == []
    assert feed(tracker, [], 9.0) == [] and tracker.tick(9.0) == []
    # Plugged in again later: a new attempt, reported again.
    again = feed(tracker, fx.plug(), 20.0)
    assert [type(e) for e in again] == [DeviceRejected]


def test_stick_partition_seen_before_its_usb_device_is_still_rejected(
    tracker: DeviceTracker,
) -> None:
    fx = load("usb_stick")
    events = feed(tracker, [fx.add(fx.child("/dev/sdd1"))], 0.0)
    assert [type(e) for e in events] == [DeviceRejected]


def test_hubs_are_infrastructure(tracker: DeviceTracker) -> None:
    fx = load("hubs")
    assert feed(tracker, fx.plug(), 0.0) == []
    assert all(is_hub(u) for u in fx.usb_devices)


def test_storage_only_recorder_allowed() -> None:
    tracker = DeviceTracker(settings(debounce_ms=1000))
    fx = load("storage_only_recorder")
    events = feed(tracker, fx.plug(), 0.0)
    assert events == [
        StorageAppeared(
            "SO000871", "1-1.3", BlockStorage("/dev/sde1", "exfat", False), "2e3c:5740",
            storage_only=True,
        )
    ]
    assert feed(tracker, fx.unplug(), 5.0) == [StorageRemoved("SO000871", "1-1.3")]
    assert tracker.tick(5.9) == []
    assert tracker.tick(6.0) == [RecorderUnplugged("SO000871", "1-1.3")]


def test_storage_only_recorder_not_allowed() -> None:
    tracker = DeviceTracker(settings(allow_storage_only=False))
    events = feed(tracker, load("storage_only_recorder").plug(), 0.0)
    assert [type(e) for e in events] == [DeviceRejected]
    assert "allow_storage_only" in events[0].reason


def test_serial_pattern_mismatch_is_rejected() -> None:
    allow = [AllowedDevice(vid="1d6b", pid="0104", serial_pattern=r"CAM\d+")]
    tracker = DeviceTracker(settings(allow=allow))
    events = feed(tracker, load("composite_acm_msc_partitioned").plug(), 0.0)
    assert len(events) == 1 and isinstance(events[0], DeviceRejected)
    assert events[0].serial == "BWC10234"
    assert "does not match the allowed serial pattern" in events[0].reason


def test_serial_pattern_must_match_whole_serial() -> None:
    allow = [AllowedDevice(vid="1d6b", pid="0104", serial_pattern=r"BWC1")]
    tracker = DeviceTracker(settings(allow=allow))
    events = feed(tracker, load("composite_acm_msc_partitioned").plug(), 0.0)
    assert [type(e) for e in events] == [DeviceRejected]


def test_coldplug_duplicate_is_acted_on_once(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    first = feed(tracker, fx.plug(), 0.0)
    assert len(first) == 2
    assert feed(tracker, fx.plug(), 0.01) == []


def test_flap_within_debounce_window_is_not_an_unplug(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    feed(tracker, fx.plug(), 0.0)
    gone = feed(tracker, fx.unplug(), 10.0)
    assert gone == [StorageRemoved("BWC10234", "1-1.2")]  # the mount is dead: say so now
    assert tracker.next_deadline() == pytest.approx(11.5)
    back = feed(tracker, fx.plug(), 11.0)
    # Its control port came back at the same node: the old link is dead, so the restarted
    # recorder is announced again (a new session), then its storage; no unplug between.
    assert back == [
        RecorderPlugged("BWC10234", "1-1.2", "/dev/ttyACM0", "1d6b:0104"),
        StorageAppeared(
            "BWC10234", "1-1.2", BlockStorage("/dev/sda1", "vfat", False), "1d6b:0104"
        ),
    ]
    assert tracker.next_deadline() is None
    assert tracker.tick(100.0) == []


def test_flap_that_moves_the_tty_replugs_without_unplug(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    feed(tracker, fx.plug(), 0.0)
    feed(tracker, fx.unplug(), 1.0)
    tty = fx.child("/dev/ttyACM0")
    moved = tty | {
        "DEVNAME": "/dev/ttyACM1",
        "DEVPATH": tty["DEVPATH"].replace("ttyACM0", "ttyACM1"),
    }
    usb, _, disk, part = fx.plug()
    events = feed(tracker, [usb, fx.add(moved), disk, part], 1.2)
    assert [type(e) for e in events] == [RecorderPlugged, StorageAppeared]
    assert events[0].tty_path == "/dev/ttyACM1"
    assert tracker.tick(50.0) == []


def test_unplug_beyond_debounce_window(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    feed(tracker, fx.plug(), 0.0)
    feed(tracker, fx.unplug(), 10.0)
    assert tracker.tick(11.49) == []
    assert tracker.tick(11.5) == [RecorderUnplugged("BWC10234", "1-1.2")]
    assert tracker.tick(20.0) == []
    again = feed(tracker, fx.plug(), 30.0)
    assert [type(e) for e in again] == [RecorderPlugged, StorageAppeared]


def test_late_replug_flushes_the_expired_window_first(tracker: DeviceTracker) -> None:
    # The timer never ran (busy loop): the next record still sees the window has passed.
    fx = load("composite_acm_msc_partitioned")
    feed(tracker, fx.plug(), 0.0)
    feed(tracker, fx.unplug(), 10.0)
    events = feed(tracker, fx.plug(), 12.0)
    assert [type(e) for e in events] == [RecorderUnplugged, RecorderPlugged, StorageAppeared]


def test_zero_debounce_unplugs_at_once() -> None:
    tracker = DeviceTracker(settings(debounce_ms=0))
    fx = load("composite_acm_msc_whole_disk")
    feed(tracker, fx.plug(), 0.0)
    events = feed(tracker, fx.unplug(), 1.0) + tracker.tick(1.0)
    assert events == [StorageRemoved("BWC10577", "1-1.3"), RecorderUnplugged("BWC10577", "1-1.3")]


def test_tty_lost_while_usb_stays_unplugs_then_replugs(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    feed(tracker, fx.plug(), 0.0)
    tty = fx.child("/dev/ttyACM0")
    # the control port died: its session's storage goes with it at once (the session that
    # comes back with the port gets it again), the undocking after the debounce window
    assert feed(tracker, [fx.remove(tty)], 1.0) == [StorageRemoved("BWC10234", "1-1.2")]
    assert tracker.tick(2.5) == [RecorderUnplugged("BWC10234", "1-1.2")]
    back = feed(tracker, [fx.add(tty)], 3.0)
    assert [type(e) for e in back] == [RecorderPlugged, StorageAppeared]


def test_move_to_another_bay_within_window_is_unplug_and_plug(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_whole_disk")
    feed(tracker, fx.plug(), 0.0)
    feed(tracker, fx.unplug(), 1.0)
    moved = load("composite_acm_msc_whole_disk")
    for d in moved.usb_devices + moved.children:
        d["DEVPATH"] = d["DEVPATH"].replace("1-1.3", "1-1.1")
    events = feed(tracker, moved.plug(), 1.5)
    assert events[0] == RecorderUnplugged("BWC10577", "1-1.3")
    assert events[1] == RecorderPlugged("BWC10577", "1-1.1", "/dev/ttyACM1", "1d6b:0104")
    assert isinstance(events[2], StorageAppeared) and events[2].bay == "1-1.1"
    assert tracker.tick(100.0) == []


def test_same_serial_in_another_bay_is_rejected(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_whole_disk")
    feed(tracker, fx.plug(), 0.0)
    clone = load("composite_acm_msc_whole_disk")
    for d in clone.usb_devices + clone.children:
        d["DEVPATH"] = d["DEVPATH"].replace("1-1.3", "1-1.1")
    events = feed(tracker, clone.plug(), 1.0)
    assert [type(e) for e in events] == [DeviceRejected]
    assert events[0].bay == "1-1.1" and "already docked in bay 1-1.3" in events[0].reason


def test_bays_map_labels_and_exclude_the_boards_own_devices() -> None:
    bays = {f"{PI4_PREFIX}-usb-0:1.2:1.0": "Bay 2", "1-1.3": "Bay 3"}
    tracker = DeviceTracker(settings(bays=bays))
    assert feed(tracker, load("keyboard").plug(), 0.0) == []  # port 1-1.1 is no bay
    events = feed(tracker, load("composite_acm_msc_partitioned").plug(), 0.0)
    assert {e.bay for e in events} == {"Bay 2"}
    events = feed(tracker, load("composite_acm_msc_whole_disk").plug(), 0.0)
    assert {e.bay for e in events} == {"Bay 3"}


def test_without_bays_an_unknown_device_anywhere_is_rejected(tracker: DeviceTracker) -> None:
    events = feed(tracker, load("keyboard").plug(), 0.0)
    assert [type(e) for e in events] == [DeviceRejected]
    assert events[0].serial is None and events[0].vid_pid == "046d:c31c"


def test_block_device_outside_usb_is_ignored(tracker: DeviceTracker) -> None:
    vda = {
        "ACTION": "add", "SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": "/dev/vda",
        "DEVPATH": "/devices/pci0000:00/0000:00:02.0/virtio1/block/vda", "ID_FS_TYPE": "ext4",
    }
    assert tracker.handle(DeviceRecord(vda), 0.0) == []


def test_kernel_only_properties_are_enough() -> None:
    # Without udevd's usb_id import the kernel's PRODUCT and the sysfs serial still identify.
    fx = load("composite_acm_msc_whole_disk")
    usb = {
        k: v for k, v in fx.usb_devices[0].items()
        if not k.startswith("ID_") and not k.startswith("ATTR{id")
    }
    assert usb_ids(usb) == ("1d6b:0104", "BWC10577")
    fx.usb_devices[0] = usb
    tracker = DeviceTracker(settings())
    assert [type(e) for e in feed(tracker, fx.plug(), 0.0)] == [RecorderPlugged, StorageAppeared]


def test_unrelated_ttys_are_ignored(tracker: DeviceTracker) -> None:
    fx = load("composite_acm_msc_partitioned")
    console = fx.child("/dev/ttyACM0") | {
        "DEVNAME": "/dev/ttyGS0", "DEVPATH": "/devices/virtual/tty/ttyGS0"
    }
    assert feed(tracker, [fx.add(console)], 0.0) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vid", "12345", "4 hex digits"),
        ("serial_pattern", "BWC(", "not a valid regular expression"),
    ],
)
def test_bad_allowlist_is_a_config_error(field: str, value: str, message: str) -> None:
    entry: dict[str, Any] = {"vid": "1d6b", "pid": "0104", field: value}
    with pytest.raises(DeviceConfigError, match=message):
        DeviceTracker(settings(allow=[AllowedDevice(**entry)]))


def test_bad_bay_key_is_a_config_error() -> None:
    with pytest.raises(DeviceConfigError, match="Bay 1"):
        DeviceTracker(settings(bays={"front-left": "Bay 1"}))


def test_resync_after_lost_events(tracker: DeviceTracker) -> None:
    # Events were lost in a burst: the whole-disk recorder left and the partitioned one
    # arrived without a word. A fresh enumeration sets the story straight.
    gone = load("composite_acm_msc_whole_disk")
    came = load("composite_acm_msc_partitioned")
    feed(tracker, gone.plug(), 0.0)
    events = tracker.resync(came.plug(), 5.0)
    assert [type(e) for e in events] == [RecorderPlugged, StorageAppeared, StorageRemoved]
    assert events[2] == StorageRemoved("BWC10577", "1-1.3")
    assert tracker.tick(6.5) == [RecorderUnplugged("BWC10577", "1-1.3")]
    assert tracker.resync(came.plug(), 7.0) == []  # nothing new: nothing said
