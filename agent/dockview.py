"""The dock as operators see it: derived from the sessions, never a second source of truth.

`DockView` turns session snapshots into per-recorder state with a readiness verdict, pushes
it to the reporter (retained MQTT state), and answers dockctl's live queries. It keeps only
what cannot be re-derived cheaply: recent battery samples (for charge-rate ETAs).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.compliance.deadlines import DeadlinePolicy
from agent.compliance.readiness import BatterySample, RecorderFacts, evaluate
from agent.settings import Settings
from agent.store.db import Database

if TYPE_CHECKING:
    from agent.session.supervisor import BaySupervisor
    from agent.store.ledger import Ledger

MAX_SAMPLES = 120
COALESCE_S = 0.2  # progress callbacks fire per chunk; views refresh at most 5x a second


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def facts_from_snapshot(
    snap: Mapping[str, Any], samples: list[BatterySample], extra_faults: list[str]
) -> RecorderFacts:
    battery = snap.get("battery") or {}
    storage = snap.get("storage") or {}
    clock = snap.get("clock") or {}
    result = snap.get("offload_result") or {}
    drift = clock.get("drift_after_ms", clock.get("drift_before_ms"))
    # Files that failed to copy are still on the recorder and not in custody.
    pending = int(result.get("failed", 0) or 0)
    complete = result.get("outcome") == "complete" and pending == 0
    return RecorderFacts(
        battery_percent=_num(battery.get("percent")),
        charging=bool(battery.get("charging")),
        battery_samples=samples,
        free_bytes=int(storage["free_bytes"]) if "free_bytes" in storage else None,
        clock_checked=bool(clock),
        clock_drift_ms=_num(drift),
        offload_complete=complete,
        files_pending=pending,
        firmware=snap.get("firmware"),
        officer_no=snap.get("officer_no"),
        open_faults=[str(f.get("code")) for f in snap.get("faults", [])] + extra_faults,
    )


class DockView:
    def __init__(self, settings: Settings, db: Database, deadline: DeadlinePolicy) -> None:
        self.settings = settings
        self.db = db
        self.deadline = deadline
        self.reporter: Any = None
        self.supervisor: BaySupervisor | None = None
        self.ledger: Ledger | None = None
        self._samples: dict[str, deque[BatterySample]] = {}
        self._published: dict[str, dict[str, Any]] = {}
        self.store_free_bytes: int | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        # Writes a pending officer assignment to a docked recorder now; True if it did.
        self.apply_assignment: Callable[[str], Awaitable[bool]] | None = None

    # --- wiring ------------------------------------------------------------------------

    def attach_reporter(self, reporter: Any) -> None:
        self.reporter = reporter

    def attach_supervisor(self, supervisor: BaySupervisor, ledger: Ledger) -> None:
        self.supervisor = supervisor
        self.ledger = ledger

    # --- derived state -------------------------------------------------------------------

    def recorders(self) -> list[dict[str, Any]]:
        """One entry per docked recorder: the session's facts plus readiness."""
        if self.supervisor is None:
            return []
        out = []
        for snap in self.supervisor.snapshot():
            key = str(snap.get("key"))
            samples = list(self._samples.get(key, ()))
            facts = facts_from_snapshot(snap, samples, [])
            readiness = evaluate(facts, self.settings.readiness, self.settings.clock.tolerance_ms)
            entry = dict(snap)
            entry["readiness"] = readiness.as_dict()
            battery = snap.get("battery")
            entry["battery_percent"] = battery.get("percent") if isinstance(battery, dict) else None
            out.append(entry)
        return out

    def sessions_changed(self) -> None:
        """Session hook: coalesce bursts of changes into one refresh."""
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return
        self._flush_handle = loop.call_later(COALESCE_S, self.refresh)

    def refresh(self) -> None:
        """Record battery samples, push retained state, hand progress to the reporter."""
        self._flush_handle = None
        now = time.monotonic()
        current: dict[str, dict[str, Any]] = {}
        for entry in self.recorders():
            key = str(entry.get("key"))
            battery = entry.get("battery") or {}
            percent = _num(battery.get("percent"))
            if percent is not None:
                dq = self._samples.setdefault(key, deque(maxlen=MAX_SAMPLES))
                if not dq or dq[-1].percent != percent:
                    dq.append(BatterySample(now, percent))
            current[key] = entry
        for gone in set(self._samples) - set(current):
            del self._samples[gone]
        if self.reporter is None:
            return
        for key, entry in current.items():
            state = _public_state(entry)
            progress = state.pop("offload", None)
            if self._published.get(key) != state:
                self.reporter.set_recorder_state(key, state)
                self._published[key] = state
            if progress and entry.get("state") == "offloading":
                self.reporter.offload_progress(key, progress)
        for gone in set(self._published) - set(current):
            self.reporter.remove_recorder(gone)
            del self._published[gone]

    def readiness_report(self) -> dict[str, Any]:
        rows = []
        for entry in self.recorders():
            r = entry["readiness"]
            rows.append({
                "bay": entry.get("bay"),
                "serial": entry.get("serial") or entry.get("key"),
                "officer": entry.get("officer_no"),
                "officer_name": entry.get("officer_name"),
                "verdict": r["verdict"],
                "reasons": r["reasons"],
                "eta_s": r["eta_s"],
            })
        return {"dock_id": self.settings.dock.id, "recorders": rows, "time": time.time()}

    async def status(self) -> dict[str, Any]:
        reporter = self.reporter
        stats = asdict(reporter.stats) if reporter is not None else {}
        return {
            "dock_id": self.settings.dock.id,
            "version": __version__,
            "broker_connected": bool(reporter.connected) if reporter is not None else None,
            "outbox_depth": stats.get("outbox_depth"),
            "store_free_bytes": self.store_free_bytes,
            "bays": self.recorders(),
        }

    # --- entry points for commands --------------------------------------------------------

    def control_handlers(self) -> dict[str, Any]:
        async def status(_: dict[str, Any]) -> dict[str, Any]:
            return await self.status()

        async def readiness(_: dict[str, Any]) -> dict[str, Any]:
            return self.readiness_report()

        return {"status": status, "readiness": readiness}

    def actions(self, lifecycle: Any = None) -> Any:
        from agent.commands import AgentActions

        return AgentActions(self, lifecycle)


def _public_state(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The retained recorder state on MQTT in the documented shape (docs/mqtt.md, schema
    `recorder-state`): no footage, no secrets, and no nulls where an object is expected."""
    state: dict[str, Any] = {
        k: entry.get(k) for k in (
            "bay", "state", "docked_at", "battery", "storage", "offload", "offload_result",
            "storage_only", "unchecked",
        )
    }
    state["identity"] = {k: entry.get(k) for k in ("model", "firmware") if entry.get(k)}
    state["officer"] = (
        {k: entry.get(k) or "" for k in ("officer_no", "officer_name", "unit_no")}
        if entry.get("officer_no") else None
    )
    clock = entry.get("clock")
    if isinstance(clock, Mapping):
        drift = clock.get("drift_after_ms", clock.get("drift_before_ms"))
        state["clock"] = {**clock, "drift_ms": drift,
                          "corrected": clock.get("action") == "set" and bool(clock.get("set_ok"))}
    readiness = entry.get("readiness")
    if isinstance(readiness, Mapping):
        reasons = readiness.get("reasons") or []
        state["readiness"] = {
            "verdict": readiness.get("verdict"),
            "reasons": [r.get("message") for r in reasons],  # for people: the fleet view
            "codes": [r.get("code") for r in reasons],  # for programs
            "eta_s": readiness.get("eta_s"),
        }
    state["faults"] = [f.get("code") for f in entry.get("faults", [])]
    # Absent facts (not read yet) are left out rather than sent as null.
    return {k: v for k, v in state.items() if v is not None or k == "officer"}
