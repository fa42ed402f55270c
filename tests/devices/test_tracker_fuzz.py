"""Random plug/unplug/flap sequences: the event stream always tells a consistent story."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.devices.events import (
    DeviceRejected,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRemoved,
)
from agent.devices.matching import DeviceTracker

from .conftest import Fixture, feed, load
from .conftest import settings as device_settings


def _moved(name: str, old: str, new: str) -> Fixture:
    fx = load(name)
    for d in fx.usb_devices + fx.children:
        d["DEVPATH"] = d["DEVPATH"].replace(f"/{old}", f"/{new}")
    return fx


DEVICES = [
    load("composite_acm_msc_partitioned"),  # BWC10234 in 1-1.2
    load("composite_acm_msc_whole_disk"),  # BWC10577 in 1-1.3
    _moved("usb_stick", "1-1.2", "1-1.5"),
    _moved("storage_only_recorder", "1-1.3", "1-1.6"),
]
REJECTED_SERIALS = {"4C530001230517114455"}

op = st.tuples(
    st.integers(0, len(DEVICES) - 1),
    st.sampled_from(
        ["plug", "unplug", "flap", "partial", "reversed", "drop_tty", "drop_storage", "tick",
         "lost_unplug", "resync"]
    ),
    st.floats(0.0, 3.0, allow_nan=False),
)


class Story:
    """Checks every event against what the agent was told before."""

    def __init__(self) -> None:
        self.plugged: set[str] = set()  # RecorderPlugged or storage-only StorageAppeared
        self.storage: set[str] = set()

    def apply(self, event: object) -> None:
        if isinstance(event, DeviceRejected):
            return
        key = event.key  # type: ignore[attr-defined]
        assert key not in REJECTED_SERIALS, event
        if isinstance(event, RecorderPlugged):
            self.plugged.add(key)
        elif isinstance(event, StorageAppeared):
            assert key not in self.storage, f"storage announced twice: {event}"
            assert event.storage_only or key in self.plugged, f"storage before plug: {event}"
            self.storage.add(key)
            self.plugged.add(key)
        elif isinstance(event, StorageRemoved):
            assert key in self.storage, f"removed storage never announced: {event}"
            self.storage.discard(key)
        elif isinstance(event, RecorderUnplugged):
            assert key in self.plugged, f"unplug of a recorder never plugged: {event}"
            assert key not in self.storage, f"unplug with storage still announced: {event}"
            self.plugged.discard(key)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=40))
def test_event_stream_is_consistent(ops: list[tuple[int, str, float]]) -> None:
    tracker = DeviceTracker(device_settings(debounce_ms=1000))
    story = Story()
    now = 0.0
    present = [False] * len(DEVICES)
    for index, action, dt in ops:
        now += dt
        fx = DEVICES[index]
        if action == "plug":
            records = fx.plug()
            present[index] = True
        elif action == "unplug":
            records = fx.unplug() if present[index] else []
            present[index] = False
        elif action == "flap":
            records = (fx.unplug() if present[index] else []) + fx.plug()
            present[index] = True
        elif action == "partial":  # only the USB device and its first child so far
            records = fx.plug()[: len(fx.usb_devices) + 1]
            present[index] = True
        elif action == "reversed":  # disks announced before the tty
            records = [fx.add(u) for u in fx.usb_devices] + [
                fx.add(c) for c in reversed(fx.children)
            ]
            present[index] = True
        elif action in ("drop_tty", "drop_storage"):
            block = action == "drop_storage"
            records = [
                fx.remove(c) for c in reversed(fx.children) if (c["SUBSYSTEM"] == "block") == block
            ]
        elif action == "lost_unplug":  # it left, but the events were lost
            present[index] = False
            continue
        elif action == "resync":
            snapshot = [r for i, d in enumerate(DEVICES) if present[i] for r in d.plug()]
            for event in tracker.resync(snapshot, now):
                story.apply(event)
            continue
        else:
            for event in tracker.tick(now):
                story.apply(event)
            continue
        for event in feed(tracker, records, now):
            story.apply(event)
    # Whatever happened, with every device fully present the agent is told exactly them.
    snapshot = [r for d in DEVICES for r in d.plug()]
    for event in tracker.resync(snapshot, now) + tracker.tick(now + 10.0):
        story.apply(event)
    recorders = {"BWC10234", "BWC10577", "SO000871"}
    assert story.plugged == recorders and story.storage == recorders
    now += 10.0
    # Everything leaves; once the windows pass the agent has been told it all went.
    for fx in DEVICES:
        for event in feed(tracker, fx.unplug(), now):
            story.apply(event)
    for event in tracker.resync([], now):
        story.apply(event)
    for event in tracker.tick(now + 10.0):
        story.apply(event)
    assert story.plugged == set() and story.storage == set()
    assert tracker.next_deadline() is None
