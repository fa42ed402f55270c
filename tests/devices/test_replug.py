"""A different recorder put into a bay whose recorder is still inside its unplug debounce
window: the old docking ends at once, the new one starts, and no record of one recorder is
ever paired with the other. A flap of the same recorder stays one docking.

The records are the simulator's (`hw_sim.uevents`): every recorder in a bay has the same
USB DEVPATH, and a new recorder's pty may reuse the node (and so the tty DEVPATH) of the
one just pulled out, exactly the situation of a quick swap on a real dock (ttyACM0 again).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agent.devices.events import (
    DeviceEvent,
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.devices.matching import DeviceTracker
from agent.devices.records import DeviceRecord
from agent.settings import AllowedDevice
from hw_sim import uevents

from .conftest import settings
from .test_tracker_fuzz import Story

PORT = 1
BAY = "1-1"
VID_PID = "1209:d0c5"
ALLOW = [AllowedDevice(vid="1209", pid="d0c5", serial_pattern=r"[A-Z0-9]{8}")]


@dataclass
class SimRecorder:
    """The three devices a simulated recorder shows in bay PORT."""

    serial: str
    pty: str
    storage: str
    devnum: int

    @property
    def usb(self) -> dict[str, str]:
        return uevents.usb_props(PORT, self.serial, "1209", "d0c5", "BWC-1", self.devnum)

    @property
    def tty(self) -> dict[str, str]:
        return uevents.tty_props(PORT, self.pty)

    @property
    def block(self) -> dict[str, str]:
        return uevents.block_props(PORT, self.storage)

    def add(self, which: str) -> DeviceRecord:
        rec = uevents.added(getattr(self, which), self.usb)
        props, usb = rec["props"], rec["usb"]
        assert props is not None
        return DeviceRecord(props, usb)

    def remove(self, which: str) -> DeviceRecord:
        props = uevents.removed(getattr(self, which))["props"]
        assert props is not None
        return DeviceRecord(props)

    def plugged(self) -> RecorderPlugged:
        return RecorderPlugged(self.serial, BAY, self.pty, VID_PID, "sim")

    def storage_appeared(self) -> StorageAppeared:
        return StorageAppeared(self.serial, BAY, DirectoryStorage(self.storage), VID_PID,
                               False, "sim")


OLD = SimRecorder("CUST0011", "/dev/pts/13", "/srv/old", 2)
NEW = SimRecorder("CUST0012", "/dev/pts/14", "/srv/new", 3)
NEW_SAME_PTY = SimRecorder("CUST0012", "/dev/pts/13", "/srv/new", 3)  # the pty node reused


def tracker() -> DeviceTracker:
    return DeviceTracker(settings(allow=ALLOW, debounce_ms=1500), source="sim")


def run(t: DeviceTracker, records: list[DeviceRecord], now: float) -> list[DeviceEvent]:
    return [e for r in records for e in t.handle(r, now)]


def docked(t: DeviceTracker, rec: SimRecorder) -> None:
    events = run(t, [rec.add("usb"), rec.add("tty"), rec.add("block")], 0.0)
    assert events == [rec.plugged(), rec.storage_appeared()]


OLD_GONE = [("old", "block"), ("old", "tty"), ("old", "usb")]
NEW_CAME = [("new", "usb"), ("new", "tty"), ("new", "block")]


def interleavings() -> list[list[tuple[str, str]]]:
    """Every merge of the old recorder's removals (children first) with the new one's
    additions (parent first), however late the old removals come. (Where both recorders
    use one child DEVPATH, the kernel removes the old device before it adds the new one;
    `possible` drops the orders that would break that.)"""
    out = []
    for positions in itertools.combinations(range(6), 3):
        merged: list[tuple[str, str]] = []
        old, new = iter(OLD_GONE), iter(NEW_CAME)
        for i in range(6):
            merged.append(next(old) if i in positions else next(new))
        out.append(merged)
    return out


def possible(order: list[tuple[str, str]], new: SimRecorder, old: SimRecorder = OLD) -> bool:
    shared = ["block"] + (["tty"] if new.pty == old.pty else [])
    return all(order.index(("old", w)) < order.index(("new", w)) for w in shared)


def _records(order: list[tuple[str, str]], new: SimRecorder,
             old: SimRecorder = OLD) -> list[DeviceRecord]:
    return [(old.remove(which) if who == "old" else new.add(which)) for who, which in order]


def check_swap(events: list[DeviceEvent], t: DeviceTracker, new: SimRecorder) -> None:
    """The old docking ended before the new one started; the new one has only its own
    port and storage; nothing of either is left pending."""
    old_events = [e for e in events if getattr(e, "key", None) == OLD.serial]
    new_events = [e for e in events if getattr(e, "key", None) == NEW.serial]
    assert old_events == [StorageRemoved(OLD.serial, BAY), RecorderUnplugged(OLD.serial, BAY)]
    assert new_events == [new.plugged(), new.storage_appeared()]
    assert events.index(RecorderUnplugged(OLD.serial, BAY)) < events.index(new.plugged())
    assert t.next_deadline() is None  # no window left for either recorder
    assert t.tick(1000.0) == []


SWAPS = [
    pytest.param(order, new, id="-".join(f"{a}.{b}" for a, b in order) + f"-{pty}")
    for new, pty in ((NEW, "new-pty"), (NEW_SAME_PTY, "reused-pty"))
    for order in interleavings() if possible(order, new)
]


@pytest.mark.parametrize(("order", "new"), SWAPS)
def test_other_recorder_in_a_held_bay_ends_the_old_docking_at_once(
        order: list[tuple[str, str]], new: SimRecorder) -> None:
    t = tracker()
    docked(t, OLD)
    events = run(t, _records(order, new), 1.0)
    check_swap(events, t, new)


def test_swap_within_window_the_sequence_a_dock_reports() -> None:
    t = tracker()
    docked(t, OLD)
    gone = run(t, [OLD.remove("block"), OLD.remove("tty"), OLD.remove("usb")], 1.0)
    assert gone == [StorageRemoved(OLD.serial, BAY)]  # held: it may come back
    came = run(t, [NEW_SAME_PTY.add("usb")], 1.1)
    assert came == [RecorderUnplugged(OLD.serial, BAY)]  # another recorder: it will not
    came = run(t, [NEW_SAME_PTY.add("tty"), NEW_SAME_PTY.add("block")], 1.2)
    assert came == [NEW_SAME_PTY.plugged(), NEW_SAME_PTY.storage_appeared()]
    assert t.tick(100.0) == []


def test_new_usb_device_at_a_known_devpath_replaces_the_old_one() -> None:
    # The old USB device's removal was lost (or is still queued): the new recorder at the
    # same DEVPATH is not a coldplug duplicate of the old one.
    t = tracker()
    docked(t, OLD)
    events = run(t, [NEW.add("usb"), NEW.add("tty"), NEW.add("block")], 1.0)
    check_swap(events, t, NEW)
    # the old device's late removal names a device node that is gone: it changes nothing
    assert run(t, [OLD.remove("tty")], 1.1) == []  # its own pty node: not the new one's
    assert run(t, [OLD.remove("usb")], 1.2) == []
    assert t.tick(100.0) == []


def test_late_removal_of_the_replaced_usb_device_leaves_the_new_recorder() -> None:
    t = tracker()
    docked(t, OLD)
    events = run(t, [OLD.remove("block"), OLD.remove("tty"), NEW.add("tty"), NEW.add("block")],
                 1.0)
    check_swap(events, t, NEW)
    assert run(t, [OLD.remove("usb")], 1.1) == []
    assert t.tick(100.0) == []


def test_tty_of_another_recorder_is_never_paired_with_a_held_one() -> None:
    t = tracker()
    docked(t, OLD)
    run(t, [OLD.remove("block"), OLD.remove("tty")], 1.0)  # the USB device still known
    events = run(t, [NEW_SAME_PTY.add("tty")], 1.1)  # its parent record names CUST0012
    assert events == [RecorderUnplugged(OLD.serial, BAY), NEW_SAME_PTY.plugged()]
    assert all(not isinstance(e, RecorderPlugged) or e.key == NEW.serial for e in events)


def test_same_recorder_flap_in_sim_records_stays_one_docking() -> None:
    t = tracker()
    docked(t, OLD)
    gone = run(t, [OLD.remove("block"), OLD.remove("tty"), OLD.remove("usb")], 1.0)
    assert gone == [StorageRemoved(OLD.serial, BAY)]
    back = SimRecorder(OLD.serial, "/dev/pts/20", OLD.storage, 4)  # re-enumerated
    events = run(t, [back.add("usb"), back.add("tty"), back.add("block")], 1.5)
    assert events == [back.plugged(), back.storage_appeared()]  # no unplug in between
    assert t.tick(100.0) == []


def test_swap_after_the_window_passed_is_unchanged() -> None:
    t = tracker()
    docked(t, OLD)
    run(t, [OLD.remove("block"), OLD.remove("tty"), OLD.remove("usb")], 1.0)
    events = run(t, [NEW.add("usb"), NEW.add("tty"), NEW.add("block")], 5.0)
    assert events == [RecorderUnplugged(OLD.serial, BAY), NEW.plugged(), NEW.storage_appeared()]


def test_resync_with_another_recorder_in_the_bay() -> None:
    # Events lost (or dock-sim reconnected) while the recorders were swapped: the fresh
    # enumeration shows the new recorder at the old one's DEVPATH.
    t = tracker()
    docked(t, OLD)
    events = t.resync([NEW_SAME_PTY.add("usb"), NEW_SAME_PTY.add("tty"),
                       NEW_SAME_PTY.add("block")], 1.0)
    check_swap(events, t, NEW_SAME_PTY)


ORDERS = interleavings()
assert ORDERS[0] == OLD_GONE + NEW_CAME  # the order a quiet machine reports
swap = st.tuples(st.sampled_from([OLD.serial, NEW.serial]), st.sampled_from([13, 14]),
                 st.integers(0, len(ORDERS) - 1), st.floats(0.0, 2.0, allow_nan=False))


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(swap, max_size=30))
def test_random_swaps_in_one_bay_tell_a_consistent_story(
        swaps: list[tuple[str, int, int, float]]) -> None:
    """Recorders put into one bay one after another, each arrival racing the removal of
    the one before (any order the kernel allows), at random intervals around the window:
    every port and storage told is the recorder's own, and the bay never has two
    recorders docked at once."""
    t, story, now = tracker(), Story(), 0.0
    here: SimRecorder | None = None
    for devnum, (serial, pty, order_index, dt) in enumerate(swaps, start=2):
        came = SimRecorder(serial, f"/dev/pts/{pty}", f"/srv/{serial}/{devnum}", devnum)
        order = ORDERS[order_index]
        if here is None:
            records = [came.add(w) for w in ("usb", "tty", "block")]
        elif possible(order, came, here):
            records = _records(order, came, here)
        else:
            records = _records(ORDERS[0], came, here)  # all of the old one first
        for event in run(t, records, now):
            story.apply(event)
            if isinstance(event, RecorderPlugged):
                assert event == came.plugged()
            if isinstance(event, StorageAppeared):
                assert event == came.storage_appeared()
        assert story.plugged <= {came.serial}, story.plugged
        here = came
        now += dt
        for event in t.tick(now):
            story.apply(event)
    if here is not None:
        assert story.plugged == {here.serial} and story.storage == {here.serial}
        gone = [here.remove("block"), here.remove("tty"), here.remove("usb")]
        for event in run(t, gone, now) + t.tick(now + 10.0):
            story.apply(event)
    assert story.plugged == set() and story.storage == set()
    assert t.next_deadline() is None
