"""The virtual recorder's firmware: answers each protocol command from the recorder's state.

Implements `hw_sim.endpoint.RecorderHandler`; `hw_sim.endpoint.DeviceEndpoint`
does framing, version negotiation and authentication in front of it. Everything here is
synchronous and quick except the guarded delete of a file whose hash is not cached.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.messages import (
    BatteryStatus,
    DeviceLogEvent,
    ErrorCode,
    EventLogPage,
    FirmwareBegin,
    FirmwareStatus,
    Identity,
    LogKind,
    OfficerRecord,
    RecordingInfo,
    RecordingPage,
    StorageStatus,
)
from hw_sim.endpoint import DeviceFault
from hw_sim.eventlog import DeviceEventLog
from hw_sim.footage import footage_files
from hw_sim.fwupdate import FirmwareUpdater
from hw_sim.models import BatteryModel, DeviceClock
from hw_sim.spec import Faults, RecorderSpec
from hw_sim.storage import Entry, RecorderStorage, StorageRefusal

log = logging.getLogger(__name__)

UNASSIGNED = OfficerRecord("", "", "", "")
_REFUSAL_CODES = {
    "not_found": ErrorCode.NOT_FOUND,
    "mismatch": ErrorCode.MISMATCH,
    "bad_name": ErrorCode.INVALID_ARGUMENT,
}


@dataclass
class RecorderState:
    """What the recorder knows right now (tests may read and change it)."""

    officer: OfficerRecord
    clock: DeviceClock
    battery: BatteryModel
    mass_storage: bool = False
    event_log: list[DeviceLogEvent] = field(default_factory=list)
    clock_sets: int = 0  # successful or ignored SetClock commands
    deletes: int = 0


class RecorderFirmware:
    """RecorderHandler over a RecorderState and a RecorderStorage.

    Officer, event log and firmware slots persist in the recorder directory, so they survive
    a replug. `on_mass_storage(on)` is called when the host switches mass-storage mode;
    `on_reboot()` when the host asked for a reboot (the reply is not yet sent: the owner
    unplugs once it is, see `reboot_requested`).
    """

    def __init__(
        self,
        spec: RecorderSpec,
        storage: RecorderStorage,
        on_mass_storage: Callable[[bool], None],
        now: Callable[[], float] = time.time,
        on_reboot: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.faults = spec.faults
        self.disk = storage
        self._on_mass_storage = on_mass_storage
        self._now = now
        self._state_file = storage.dir / "state.json"
        self._events = DeviceEventLog(storage.dir / "eventlog.jsonl")
        self.updater = FirmwareUpdater(spec, storage.dir, lambda: self.faults)
        self.reboot_requested = False
        self._on_reboot = on_reboot
        t = now()
        self.state = RecorderState(
            officer=spec.officer or UNASSIGNED,
            clock=DeviceClock.starting(t, spec.clock_offset_s, spec.clock_drift_ppm),
            battery=BatteryModel(
                spec.battery_percent, t, spec.charge_percent_per_min, spec.battery_cycles,
                spec.faults.battery_failing,
            ),
            event_log=self._events.entries,
        )
        self._listing: list[Entry] | None = None

    # --- persistence (called from a worker thread at plug time) --------------------------
    def load(self) -> None:
        """Power on: officer and event log from the recorder directory, then boot."""
        try:
            saved = json.loads(self._state_file.read_text())
            self.state.officer = OfficerRecord(**saved["officer"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not self._events.load():  # first plug: the log holds the footage's history
            history: list[tuple[int, str, int]] = []
            for f in footage_files(self.spec):
                name = f.name.decode("utf-8", "replace")
                history += [(LogKind.RECORDING_START, name, f.start_ms),
                            (LogKind.RECORDING_STOP, name, f.end_ms)]
            device_now = self.state.clock.now_ms(self._now())
            history += [(kind, detail, device_now - int(ago_s * 1000))
                        for kind, detail, ago_s in self.spec.field_log]
            self._events.append(history)
        self.updater.power_on()
        self._log(LogKind.POWER_ON, "docked")
        if self.faults.battery_failing:
            self._log(LogKind.HARDWARE_FAULT, "battery health low")
        if self.state.battery.reading(self._now()).percent < 20:
            self._log(LogKind.LOW_BATTERY, "")

    def set_faults(self, faults: Faults) -> None:
        if faults.battery_failing and not self.faults.battery_failing:
            self._log(LogKind.HARDWARE_FAULT, "battery health low")
        self.faults = faults
        self.state.battery.failing = faults.battery_failing

    def log_event(self, kind: int, detail: str) -> None:
        """Append one entry to the device event log, stamped with the device clock."""
        self._log(kind, detail)

    def _log(self, kind: int, detail: str) -> None:
        self._events.append([(kind, detail, self.state.clock.now_ms(self._now()))])

    def storage_fault(self, name: bytes, offset: int) -> None:
        """A read of the storage failed (file-layer fault): the recorder logs it."""
        self._log(LogKind.STORAGE_FAULT, f"read error {name.decode('utf-8', 'replace')} @{offset}")

    def invalidate_listing(self) -> None:
        self._listing = None

    def _entries(self) -> list[Entry]:
        if self._listing is None:
            self._listing = self.disk.list_entries()
        return self._listing

    # --- RecorderHandler -------------------------------------------------------------------
    def identity(self) -> Identity:
        s = self.spec
        claimed = self.faults.claimed_serial
        return Identity(s.serial if claimed is None else claimed, s.model, s.hardware_rev,
                        self.updater.running_version)

    def get_officer(self) -> OfficerRecord:
        return self.state.officer

    def set_officer(self, record: OfficerRecord) -> None:
        self.state.officer = record
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"officer": {
            "officer_no": record.officer_no, "officer_name": record.officer_name,
            "unit_no": record.unit_no, "unit_name": record.unit_name}}))
        tmp.replace(self._state_file)
        self._log(LogKind.OFFICER_ASSIGNED, record.officer_no)

    def get_clock(self) -> int:
        return max(0, self.state.clock.now_ms(self._now()))

    def set_clock(self, utc_ms: int) -> None:
        mode = self.faults.clock_set
        if mode == "error":
            self._log(LogKind.HARDWARE_FAULT, "RTC write failed")
            raise DeviceFault(ErrorCode.HARDWARE_FAULT, "real-time clock cannot be set")
        self.state.clock_sets += 1
        if mode == "ignored":
            return  # acknowledges, keeps its time
        self.state.clock.set_ms(utc_ms, self._now())
        self._log(LogKind.CLOCK_SET, str(utc_ms))

    def battery(self) -> BatteryStatus:
        r = self.state.battery.reading(self._now())
        return BatteryStatus(r.percent, r.millivolts, r.charging, r.temperature_c,
                             r.cycle_count, r.health_percent)

    def storage(self) -> StorageStatus:
        entries = self._entries()
        used = sum(e.size for e in entries)
        total = self.spec.storage_total_bytes
        # a growing file is a recording still being written
        return StorageStatus(total, max(0, total - used), len(entries), bool(self.faults.growing))

    def set_mass_storage(self, on: bool) -> None:
        if on == self.state.mass_storage:
            return
        self.state.mass_storage = on
        self._log(LogKind.MASS_STORAGE_ON if on else LogKind.MASS_STORAGE_OFF, "")
        self._on_mass_storage(on)

    def list_recordings(self, offset: int, limit: int) -> RecordingPage:
        entries = self._entries()
        claimed = {self.disk.footage(i).name: (start, end)
                   for i, start, end in self.faults.listed_times}
        page = tuple(
            RecordingInfo(e.name, e.size, *claimed.get(e.name, (max(0, e.start_ms),
                                                                max(0, e.end_ms))))
            for e in entries[offset : offset + limit]
        )
        return RecordingPage(len(entries), page)

    def delete_recording(self, name: bytes, size: int, digest: bytes) -> None:
        if self.faults.lying_delete:  # answers as if it had deleted, keeps the file
            self._log(LogKind.FILE_DELETED, name.decode("utf-8", "replace"))
            return
        try:
            self.disk.delete(name, size, digest)
        except StorageRefusal as e:
            raise DeviceFault(
                _REFUSAL_CODES[e.reason], str(e).encode()[:250].decode("utf-8", "ignore")
            ) from None
        except OSError as e:
            self._log(LogKind.STORAGE_FAULT, f"delete failed: {e.strerror}")
            raise DeviceFault(ErrorCode.STORAGE_FAULT, f"delete failed: {e.strerror}") from None
        self.state.deletes += 1
        self.invalidate_listing()
        self._log(LogKind.FILE_DELETED, name.decode("utf-8", "replace"))

    def event_log(self, since_index: int, limit: int) -> EventLogPage:
        log_ = self.state.event_log
        return EventLogPage(len(log_), tuple(log_[since_index : since_index + limit]))

    def firmware_status(self) -> FirmwareStatus:
        return self.updater.status()

    def firmware_begin(self, manifest: bytes, signature: bytes) -> FirmwareBegin:
        return self.updater.begin(manifest, signature)

    def firmware_chunk(self, offset: int, crc32: int, data: bytes) -> int:
        return self.updater.chunk(offset, crc32, data)

    def firmware_commit(self) -> None:
        self.updater.commit()

    def reboot(self) -> None:
        self.reboot_requested = True
        self._log(LogKind.POWER_OFF, "reboot")
        if self._on_reboot is not None:
            self._on_reboot()


def recorder_dir(workdir: Path, serial: str) -> Path:
    return workdir / serial
