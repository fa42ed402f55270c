"""The device decisions, as pure code: which device is a recorder, which tty and which
block device belong to it, and what the rest of the agent is told.

Every device source (udev, or the dock-sim simulator) turns what it sees into
`DeviceRecord`s (plain property dicts: the device's own udev properties plus those of its
`usb_device` ancestor) and feeds them to `DeviceTracker.handle` with the current monotonic
time; the tracker answers with domain events. Nothing here touches udev or a socket, so
every decision is tested on recorded property sets, and the simulator's recorders meet the
same allowlist, debounce and pairing as real ones.

Rules (see docs/mounting.md for the operator's view):
- Hubs are infrastructure and ignored. With `[devices.bays]` configured, only devices at
  or below a bay's port count; the rest (the board's own devices) are ignored. Without
  bays, every non-hub USB device is in a bay.
- A device in a bay that is not an allowed recorder is rejected once per attachment and
  its tty and disks are never reported, so nothing ever mounts or reads them.
- A recorder is keyed by its USB serial. Its tty (ttyACM*/ttyUSB*) and block devices are
  paired with it through their `usb_device` ancestor; USB functions that are separate USB
  devices (behind a hub inside the recorder) join it when they carry the same serial in
  the same bay. The same serial in another bay is rejected as a duplicate.
- Storage is reported once udev has identified a filesystem on it (`ID_FS_TYPE`, possibly
  in a later `change` event): a partition, or a whole disk without a partition table.
- Storage events are immediate: after a block device disappears its mount is dead even if
  the same node comes back, so the offloader must hear about it. For a recorder with a
  control port, StorageAppeared always follows its RecorderPlugged.
- The recorder itself (its USB device and, unless storage-only, its tty) is debounced:
  when it vanishes, RecorderUnplugged is sent only if it stays away for `debounce_ms`. If it
  comes back in time no unplug is sent; a control port that vanished and came back (under
  the same node or another) is a restarted recorder whose old link is dead, so it is
  announced again with RecorderPlugged and its storage after it (a new docking session).
- The debounce spares a recorder that comes back, never one that was replaced: another
  allowed recorder arriving in a bay whose recorder is held ends the held docking at once
  (RecorderUnplugged before the newcomer's RecorderPlugged). A USB device at a known
  DEVPATH with another serial or vid:pid is a new device there (the old one's removal is
  late or lost), so nothing of the new one is ever paired with the old; a late removal
  naming the old device node is then ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agent.devices.allowlist import Allowed, AllowList
from agent.devices.debounce import Debouncer
from agent.devices.events import (
    DeviceEvent,
    DeviceRejected,
    PortIdentity,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
    StorageRef,
    StorageRemoved,
)
from agent.devices.records import DeviceRecord, is_hub, port_identity, storage_of, usb_ids
from agent.devices.usb_ports import BayMap, port_of, usb_device_devpath
from agent.settings import DeviceSettings

Source = Literal["udev", "sim"]
_TTY_NODE = re.compile(r"^/dev/tty(?:ACM|USB)\d+$")
_SIM_TTY_NODE = re.compile(r"^/dev/pts/\d+$")  # a simulated recorder's port is a pty
_ADD_ACTIONS = frozenset({"add", "change", "bind"})


@dataclass(slots=True)
class _Usb:
    devpath: str
    bay: str
    key: str | None  # recorder key; None for a rejected device
    vid_pid: str | None
    storage_only: bool
    serial: str | None = None  # as the device reported it (also for a rejected one)
    devname: str = ""  # its /dev/bus/usb node: a new enumeration gets a new one


@dataclass(slots=True)
class _Recorder:
    key: str
    bay: str
    vid_pid: str
    storage_only: bool
    usb: set[str] = field(default_factory=set)  # DEVPATHs of its USB devices
    ttys: dict[str, str] = field(default_factory=dict)  # DEVPATH -> /dev node
    ports: dict[str, PortIdentity] = field(default_factory=dict)  # tty DEVPATH -> generation
    volumes: dict[str, StorageRef] = field(default_factory=dict)  # DEVPATH -> storage
    told: bool = False  # RecorderPlugged (or storage-only StorageAppeared) was sent
    told_tty: str | None = None
    told_storage: tuple[str, StorageRef] | None = None

    def tty(self) -> str | None:
        if self.told_tty is not None and self.told_tty in self.ttys.values():
            return self.told_tty
        return self.ttys[min(self.ttys)] if self.ttys else None

    def volume(self) -> tuple[str, StorageRef] | None:
        told = self.told_storage
        if told is not None and self.volumes.get(told[0]) == told[1]:
            return told
        if not self.volumes:
            return None
        devpath = min(self.volumes)
        return devpath, self.volumes[devpath]

    def add_tty(self, record: DeviceRecord, usb_node: str, simulated: bool) -> None:
        """Its control port, with the port's generation (what a session checks)."""
        self.ttys[record.devpath] = record.props["DEVNAME"]
        port = port_identity(usb_node, record.props, simulated=simulated)
        if port is not None:
            self.ports[record.devpath] = port

    def drop(self, devpath: str) -> None:
        """Forget one of its ttys or disks."""
        self.ttys.pop(devpath, None)
        self.ports.pop(devpath, None)
        self.volumes.pop(devpath, None)

    def present(self) -> bool:
        return bool(self.usb) and (self.storage_only or bool(self.ttys))

    def withdraw_stale(self) -> list[DeviceEvent]:
        """StorageRemoved for told storage that is gone, or whose session's port is."""
        events: list[DeviceEvent] = []
        if self.told_tty is not None and self.told_tty not in self.ttys.values():
            # Its control port vanished: a link open on it is dead, and the port that comes
            # back (same node or another) belongs to a restarted recorder. Its return is
            # announced as a new docking, storage after it; the debounce still spares an
            # undocking in between.
            self.told_tty = None
            if self.told_storage is not None:
                events.append(StorageRemoved(self.key, self.bay))
                self.told_storage = None
        if self.told_storage is not None and self.volume() != self.told_storage:
            events.append(StorageRemoved(self.key, self.bay))
            self.told_storage = None
        return events

    def announce(self, source: Source) -> list[DeviceEvent]:
        """Tell what is present and untold: its port, then its storage."""
        events: list[DeviceEvent] = []
        tty, volume = self.tty(), self.volume()
        if not self.storage_only and tty is not None and tty != self.told_tty:
            port = next((self.ports.get(p) for p, node in self.ttys.items() if node == tty),
                        None)
            events.append(RecorderPlugged(self.key, self.bay, tty, self.vid_pid, source, port))
            self.told_tty = tty
            self.told = True
        # Present means a recorder with a control port has its tty, announced just above.
        if volume is not None and self.told_storage is None:
            events.append(StorageAppeared(self.key, self.bay, volume[1], self.vid_pid,
                                          self.storage_only, source))
            self.told_storage = volume
            self.told = True
        return events

    def withdraw_all(self) -> list[DeviceEvent]:
        """Its undocking: storage first, then the recorder, as far as they were told."""
        events: list[DeviceEvent] = []
        if self.told_storage is not None:
            events.append(StorageRemoved(self.key, self.bay))
        if self.told:
            events.append(RecorderUnplugged(self.key, self.bay))
        self.told, self.told_tty, self.told_storage = False, None, None
        return events


class DeviceTracker:
    """Pairs device records into recorders and decides the domain events (pure).

    `source` names where the records come from; the events carry it, and records from
    the simulator may name a pty as a recorder's port and a directory as its storage.
    """

    def __init__(self, settings: DeviceSettings, *, source: Source = "udev") -> None:
        self._source: Source = source
        self._tty_node = _SIM_TTY_NODE if source == "sim" else _TTY_NODE
        self._allow = AllowList(settings.allow, allow_storage_only=settings.allow_storage_only)
        self._bays = BayMap(settings.bays)
        self._debounce: Debouncer[str] = Debouncer(settings.debounce_ms / 1000.0)
        self._usb: dict[str, _Usb] = {}
        self._recorders: dict[str, _Recorder] = {}
        self._children: dict[str, str] = {}  # tty/block DEVPATH -> recorder key

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (monotonic seconds), if ever."""
        return self._debounce.next_deadline()

    def tick(self, now: float) -> list[DeviceEvent]:
        """Send the unplugs whose debounce window has passed."""
        events: list[DeviceEvent] = []
        for key in self._debounce.pop_due(now):
            rec = self._recorders.get(key)
            if rec is not None:
                events += self._unplug(rec)
        return events

    def resync(self, present: list[DeviceRecord], now: float) -> list[DeviceEvent]:
        """Catch up after lost udev events (netlink buffer overrun): `present` is a fresh
        enumeration. New devices are added; devices the tracker knows that are no longer
        present are removed as if their remove events had arrived (children first)."""
        events: list[DeviceEvent] = []
        for record in present:
            events += self.handle(record, now)
        seen = {record.devpath for record in present}
        # A tty and a disk leave the same way (`_child_removed`), so "block" serves both.
        removals = [_removal(p, "block") for p in self._children if p not in seen] + [
            _removal(p, "usb") for p in self._usb if p not in seen]
        for removal in removals:
            events += self.handle(removal, now)
        return events

    def handle(self, record: DeviceRecord, now: float) -> list[DeviceEvent]:
        """Apply one udev record; returns the domain events it causes, in order."""
        events = self.tick(now)  # a window that has passed is decided before this record
        props = record.props
        subsystem = props.get("SUBSYSTEM", "")
        action = record.action
        devpath = record.devpath
        if not devpath:
            return events
        key: str | None = None
        if subsystem == "usb":
            if action == "remove":
                key = self._usb_removed(devpath, props.get("DEVNAME", ""))
            elif action in _ADD_ACTIONS and props.get("DEVTYPE") == "usb_device":
                key = self._usb_seen(props, events, now)
        elif subsystem == "tty":
            if action == "remove":
                key = self._child_removed(devpath)
            elif action in _ADD_ACTIONS and self._tty_node.match(props.get("DEVNAME", "")):
                key = self._tty_seen(record, events, now)
        elif subsystem == "block":
            if action == "remove":
                key = self._child_removed(devpath)
            elif action in _ADD_ACTIONS:
                key = self._block_seen(record, events, now)
        if key is not None and key in self._recorders:
            events += self._reconcile(self._recorders[key], now)
        return events

    # -- USB devices -------------------------------------------------------------------

    def _usb_seen(
        self, usb: Mapping[str, str], events: list[DeviceEvent], now: float
    ) -> str | None:
        devpath = usb.get("DEVPATH", "")
        vid_pid, serial = usb_ids(usb)
        devname = usb.get("DEVNAME", "")
        known = self._usb.get(devpath)
        if known is not None and not _replaced(known, vid_pid, serial):
            # coldplug duplicate, change, bind: decided already
            known.devname = devname or known.devname
            return self._recorder_of(known)
        if known is not None:  # another device at this DEVPATH: the old one was replaced
            events += self._end_now(self._usb_removed(devpath, known.devname), now)
        port = port_of(devpath)
        if port is None or is_hub(usb):
            return None
        bay = self._bays.label(port)
        if bay is None:  # the board's own devices, outside every bay
            return None
        verdict = self._allow.check(vid_pid, serial)
        if isinstance(verdict, Allowed) and serial is not None:
            events += self._end_held_in(bay, serial, now)
            rec = self._recorders.get(serial)
            if rec is not None and rec.bay != bay:
                if rec.usb:
                    self._reject(
                        devpath, bay, vid_pid, serial,
                        f"USB serial {serial!r} is already docked in bay {rec.bay}", events,
                    )
                    return None
                # It left its old bay (unplug still debouncing) and turned up in another:
                # that is a move, not a flap.
                events += self._end_now(serial, now)
                rec = None
            if rec is None:
                rec = _Recorder(serial, bay, verdict.vid_pid, verdict.storage_only)
                self._recorders[serial] = rec
            rec.usb.add(devpath)
            self._usb[devpath] = _Usb(devpath, bay, serial, vid_pid, verdict.storage_only,
                                      serial, devname)
            return serial
        reason = verdict.reason if not isinstance(verdict, Allowed) else "no USB serial"
        self._reject(devpath, bay, vid_pid, serial, reason, events, devname)
        return None

    def _reject(
        self, devpath: str, bay: str, vid_pid: str | None, serial: str | None, reason: str,
        events: list[DeviceEvent], devname: str = "",
    ) -> None:
        self._usb[devpath] = _Usb(devpath, bay, None, vid_pid, False, serial, devname)
        events.append(DeviceRejected(bay, vid_pid, serial, reason, devpath))

    def _end_held_in(self, bay: str, serial: str, now: float) -> list[DeviceEvent]:
        """Another recorder came into `bay`: one whose USB device left it (its unplug
        still debouncing) will not come back into it."""
        held = [r.key for r in self._recorders.values()
                if r.bay == bay and r.key != serial and not r.usb]
        return [e for key in held for e in self._end_now(key, now)]

    def _end_now(self, key: str | None, now: float) -> list[DeviceEvent]:
        """End recorder `key`'s docking without waiting for the debounce window (unless
        another of its USB functions is still there: then the usual rules decide)."""
        rec = self._recorders.get(key) if key is not None else None
        if rec is None or rec.usb:
            return self._reconcile(rec, now) if rec is not None else []
        self._debounce.cancel(rec.key)
        return self._unplug(rec)

    def _recorder_of(self, usb: _Usb) -> str | None:
        """The recorder key of a known USB device, re-creating the recorder if it was
        unplugged (tty gone too long) while the USB device itself stayed."""
        if usb.key is None:
            return None
        rec = self._recorders.get(usb.key)
        if rec is None:
            assert usb.vid_pid is not None
            rec = _Recorder(usb.key, usb.bay, usb.vid_pid, usb.storage_only)
            self._recorders[usb.key] = rec
        rec.usb.add(usb.devpath)
        return usb.key

    def _usb_removed(self, devpath: str, devname: str) -> str | None:
        known = self._usb.get(devpath)
        if known is not None and devname and known.devname and devname != known.devname:
            return None  # the late removal of a device this one already replaced
        usb = self._usb.pop(devpath, None)
        if usb is None or usb.key is None:
            return None
        rec = self._recorders.get(usb.key)
        if rec is None:
            return None
        rec.usb.discard(devpath)
        # Children normally go first; if their removes were lost, forget them now.
        below = devpath + "/"
        for child in [p for p in (*rec.ttys, *rec.volumes) if p.startswith(below)]:
            rec.drop(child)
            self._children.pop(child, None)
        return rec.key

    # -- ttys and disks ----------------------------------------------------------------

    def _parent_key(
        self, record: DeviceRecord, events: list[DeviceEvent], now: float
    ) -> str | None:
        if record.usb is not None:
            return self._usb_seen(record.usb, events, now)
        usb_devpath = usb_device_devpath(record.devpath)
        known = self._usb.get(usb_devpath) if usb_devpath else None
        return self._recorder_of(known) if known else None

    def _tty_seen(
        self, record: DeviceRecord, events: list[DeviceEvent], now: float
    ) -> str | None:
        key = self._parent_key(record, events, now)
        if key is None:
            return None
        rec = self._recorders[key]
        if not rec.storage_only:  # a storage-only entry's tty is not its control port
            rec.add_tty(record, _usb_node(self._usb, record.devpath), self._source == "sim")
            self._children[record.devpath] = key
        return key

    def _block_seen(
        self, record: DeviceRecord, events: list[DeviceEvent], now: float
    ) -> str | None:
        key = self._parent_key(record, events, now)
        if key is None:
            return None
        rec = self._recorders[key]
        self._children[record.devpath] = key
        storage = storage_of(record.props, directories=self._source == "sim",
                             usb_node=_usb_node(self._usb, record.devpath))
        if storage is not None:
            rec.volumes[record.devpath] = storage
        else:  # no filesystem (yet): a partition table, no medium, or udev still probing
            rec.volumes.pop(record.devpath, None)
        return key

    def _child_removed(self, devpath: str) -> str | None:
        key = self._children.pop(devpath, None)
        rec = self._recorders.get(key) if key else None
        if rec is None:
            return None
        rec.drop(devpath)
        return key

    # -- what the agent is told ----------------------------------------------------------

    def _reconcile(self, rec: _Recorder, now: float) -> list[DeviceEvent]:
        events = rec.withdraw_stale()
        if rec.present():
            self._debounce.cancel(rec.key)
            return events + rec.announce(self._source)
        if rec.told:
            self._debounce.hold(rec.key, now)
        elif not rec.usb:
            self._forget(rec)
        return events

    def _unplug(self, rec: _Recorder) -> list[DeviceEvent]:
        events = rec.withdraw_all()
        if not rec.usb:
            self._forget(rec)
        return events

    def _forget(self, rec: _Recorder) -> None:
        self._recorders.pop(rec.key, None)
        self._debounce.cancel(rec.key)
        for child in [p for p, k in self._children.items() if k == rec.key]:
            del self._children[child]


def _usb_node(usbs: Mapping[str, _Usb], devpath: str) -> str:
    """The node (/dev/bus/usb/BBB/DDD) of the USB device a tty or disk belongs to, or ""."""
    usb = usbs.get(usb_device_devpath(devpath) or "")
    return usb.devname if usb is not None else ""


def _replaced(known: _Usb, vid_pid: str | None, serial: str | None) -> bool:
    """Whether a USB device record at `known`'s DEVPATH is another device than `known`:
    it names another serial or vid:pid (a record that names none is the same device)."""
    return (serial is not None and serial != known.serial) or (
        vid_pid is not None and known.vid_pid is not None and vid_pid != known.vid_pid)


def _removal(devpath: str, subsystem: str) -> DeviceRecord:
    return DeviceRecord({"ACTION": "remove", "SUBSYSTEM": subsystem, "DEVPATH": devpath})
