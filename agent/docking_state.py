"""What a docking session knows about its recorder, as frozen values.

The session gathers these facts; the view, readiness, the MQTT payloads and health read
them as they are — nobody parses them back out of dictionaries. Each type's `as_record()`
is its JSON shape in the custody ledger and on dockctl's status (the field names are part
of those contracts); `None` in a record means "not known yet".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from agent.domain import RecorderIdentity

BatterySampleRow: TypeAlias = tuple[float, float, bool]  # (dock wall time, percent, charging)

# Facts a storage-only recorder (no control channel) never reports.
STORAGE_ONLY_UNCHECKED = ("officer", "clock", "battery")


@dataclass(frozen=True, slots=True)
class BatteryFacts:
    """One battery reading of a recorder."""

    percent: int
    millivolts: int
    charging: bool
    temperature_c: float
    cycle_count: int
    health_percent: int

    def as_record(self) -> dict[str, object]:
        return {
            "percent": self.percent, "millivolts": self.millivolts, "charging": self.charging,
            "temperature_c": self.temperature_c, "cycle_count": self.cycle_count,
            "health_percent": self.health_percent,
        }


@dataclass(frozen=True, slots=True)
class StorageFacts:
    """The recorder's own report of its storage."""

    total_bytes: int
    free_bytes: int
    file_count: int
    recording: bool

    def as_record(self) -> dict[str, object]:
        return {"total_bytes": self.total_bytes, "free_bytes": self.free_bytes,
                "file_count": self.file_count, "recording": self.recording}


@dataclass(frozen=True, slots=True)
class ClockSet:
    """The attempt to set the recorder clock and what a fresh measurement said after it."""

    drift_after_ms: int
    rtt_after_ms: float
    ok: bool
    error: str | None = None  # the recorder refused the set


@dataclass(frozen=True, slots=True)
class ClockFacts:
    """The recorder clock as measured at docking, and the set (if one was made)."""

    drift_before_ms: int
    rtt_ms: float
    samples: int
    tolerance_ms: int
    dock_synchronised: bool
    action: str  # agent.session.clock.ClockAction value: ok | set | refuse_unsynchronised
    set: ClockSet | None = None

    @property
    def drift_ms(self) -> int:
        """The drift that holds now: after a set, else as measured."""
        return self.set.drift_after_ms if self.set is not None else self.drift_before_ms

    @property
    def corrected(self) -> bool:
        return self.action == "set" and self.set is not None and self.set.ok

    def as_record(self) -> dict[str, object]:
        out: dict[str, object] = {
            "drift_before_ms": self.drift_before_ms, "rtt_ms": round(self.rtt_ms, 3),
            "samples": self.samples, "tolerance_ms": self.tolerance_ms,
            "dock_synchronised": self.dock_synchronised, "action": self.action,
        }
        if self.set is not None:
            out["drift_after_ms"] = self.set.drift_after_ms
            out["rtt_after_ms"] = round(self.set.rtt_after_ms, 3)
            out["set_ok"] = self.set.ok
            if self.set.error:
                out["set_error"] = self.set.error
        return out


@dataclass(frozen=True, slots=True)
class OffloadProgressFacts:
    """Counters of a running offload."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    rate_bps: float
    eta_s: float | None
    current_file: str | None  # recorder path as text (undecodable bytes escaped)

    def as_record(self) -> dict[str, object]:
        return {
            "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
            "files_done": self.files_done, "files_total": self.files_total,
            "rate_bps": self.rate_bps, "eta_s": self.eta_s, "current_file": self.current_file,
        }


RESULT_COUNTS = ("stored", "already_stored", "failed", "refused", "wiped", "wipe_failed",
                 "late", "changed", "bytes_copied", "resumed_bytes")


@dataclass(frozen=True, slots=True)
class OffloadResult:
    """How an offload ended. A session that ended before its offload reported (the
    recorder left) has only an outcome and a detail: its counters are unknown (None)."""

    outcome: str  # complete | interrupted | storage_full | store_error
    detail: str = ""
    stored: int | None = None
    already_stored: int | None = None
    failed: int | None = None
    refused: int | None = None
    wiped: int | None = None
    wipe_failed: int | None = None
    late: int | None = None
    changed: int | None = None
    bytes_copied: int | None = None
    resumed_bytes: int | None = None

    @classmethod
    def left_early(cls) -> OffloadResult:
        return cls("interrupted", "the recorder left the bay before its offload finished")

    @property
    def files_pending(self) -> int:
        """Files that failed to copy: still on the recorder and not in custody."""
        return self.failed or 0

    @property
    def complete(self) -> bool:
        return self.outcome == "complete" and self.files_pending == 0

    def as_record(self) -> dict[str, object]:
        out: dict[str, object] = {"outcome": self.outcome, "detail": self.detail}
        for name in RESULT_COUNTS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def as_progress(self) -> OffloadProgressFacts:
        """Progress counters of an offload known only by its result (it never reported)."""
        files = (self.stored or 0) + (self.already_stored or 0) + (self.failed or 0)
        done = (self.bytes_copied or 0) + (self.resumed_bytes or 0)
        return OffloadProgressFacts(files_done=files, files_total=files, bytes_done=done,
                                    bytes_total=done, rate_bps=0.0, eta_s=0.0,
                                    current_file=None)


@dataclass(frozen=True, slots=True)
class FaultNote:
    """A fault this session raised (the durable record is in the fault register)."""

    code: str
    reason: str
    severity: str

    def as_record(self) -> dict[str, object]:
        return {"code": self.code, "reason": self.reason, "severity": self.severity}


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """One docking session at one instant: what the view and its readers derive from."""

    bay: str
    key: str  # attachment key (USB serial)
    session_id: str
    identity: RecorderIdentity | None  # None until identified
    storage_only: bool
    state: str  # agent.session.state_machine.State value
    state_since: float
    docked_at: float
    battery: BatteryFacts | None = None
    battery_at: float | None = None
    battery_samples: tuple[BatterySampleRow, ...] = ()
    storage: StorageFacts | None = None
    clock: ClockFacts | None = None
    offload: OffloadProgressFacts | None = None
    offload_result: OffloadResult | None = None
    faults: tuple[FaultNote, ...] = ()
    unchecked: tuple[str, ...] = field(default=())

    @property
    def serial(self) -> str | None:
        return self.identity.serial if self.identity is not None else None

    @property
    def officer_no(self) -> str | None:
        return (self.identity.officer_no or None) if self.identity is not None else None

    @property
    def offloading(self) -> bool:
        return self.state == "offloading"

    def as_record(self) -> dict[str, object]:
        """The flat JSON shape of a bay (dockctl status), without the battery history."""
        ident = self.identity

        def known(value: str | None) -> str | None:
            return value or None

        return {
            "bay": self.bay, "key": self.key, "session_id": self.session_id,
            "serial": ident.serial if ident else None,
            "model": ident.model if ident else None,
            "hardware_rev": ident.hardware_rev if ident else None,
            "firmware": ident.firmware if ident else None,
            "officer_no": known(ident.officer_no) if ident else None,
            "officer_name": known(ident.officer_name) if ident else None,
            "unit_no": known(ident.unit_no) if ident else None,
            "unit_name": known(ident.unit_name) if ident else None,
            "storage_only": self.storage_only, "state": self.state,
            "state_since": self.state_since, "docked_at": self.docked_at,
            "battery": self.battery.as_record() if self.battery else None,
            "battery_at": self.battery_at,
            "storage": self.storage.as_record() if self.storage else None,
            "clock": self.clock.as_record() if self.clock else None,
            "offload": self.offload.as_record() if self.offload else None,
            "offload_result": self.offload_result.as_record() if self.offload_result else None,
            "faults": [f.as_record() for f in self.faults],
            "unchecked": list(self.unchecked),
        }
