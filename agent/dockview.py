"""The dock as operators see it: derived from the sessions, never a second source of truth.

`DockView` turns session snapshots into per-recorder state with a readiness verdict, pushes
it to the reporter (retained MQTT state), and answers dockctl's live queries. It keeps only
nothing of its own: battery samples (for charge-rate ETAs) come with the sessions, which
load them from the durable per-recorder history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.compliance.deadlines import DeadlinePolicy
from agent.compliance.readiness import (
    BatterySample,
    RecorderFacts,
    evaluate,
    learned_charge_rate_per_s,
)
from agent.mqtt import payloads
from agent.settings import Settings
from agent.store.db import Database

if TYPE_CHECKING:
    from agent.firmware.service import FirmwareService
    from agent.session.supervisor import BaySupervisor
    from agent.store.ledger import Ledger

# Session states in which the offload may have begun (storage unlocked for it, or later).
OFFLOAD_STATES = frozenset({"storage_unlocked", "mounted", "offloading"})
COALESCE_S = 0.2  # progress callbacks fire per chunk; views refresh at most 5x a second


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# Conditions readiness judges itself from live facts; their faults would only repeat them.
_SELF_JUDGED = frozenset({"firmware_not_allowed", "officer_unassigned"})


def facts_from_snapshot(
    snap: Mapping[str, Any], samples: list[BatterySample], extra_faults: list[str]
) -> RecorderFacts:
    battery = snap.get("battery") or {}
    storage = snap.get("storage") or {}
    clock = snap.get("clock") or {}
    result = snap.get("offload_result") or {}
    history = [(float(t), float(p), bool(c)) for t, p, c in snap.get("battery_samples") or ()]
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
        model=snap.get("model"),
        learned_charge_rate_per_s=learned_charge_rate_per_s(history),
        officer_no=snap.get("officer_no"),
        open_faults=[str(f.get("code")) for f in snap.get("faults", [])
                     if f.get("code") not in _SELF_JUDGED] + extra_faults,
    )


class DockView:
    def __init__(self, settings: Settings, db: Database, deadline: DeadlinePolicy,
                 firmware: FirmwareService | None = None) -> None:
        self.settings = settings
        self.firmware = firmware  # per-recorder firmware field; central allowlists
        self.db = db
        self.deadline = deadline
        self.reporter: Any = None
        self.supervisor: BaySupervisor | None = None
        self.ledger: Ledger | None = None
        self._published: dict[str, dict[str, Any]] = {}
        # key -> (session id, final summary sent) of the offload last reported
        self._progress_sent: dict[str, tuple[str, bool]] = {}
        self._last_entry: dict[str, Mapping[str, Any]] = {}  # as last seen, per recorder
        # key -> {session id: offload result or None} of the sessions whose offload began,
        # noted at every session change: a short session can begin (even finish) its offload
        # and end between two coalesced refreshes, and its summary is still owed
        self._offload_began: dict[str, dict[str, Mapping[str, Any] | None]] = {}
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
            # The session's samples include this pack's earlier dockings (durable history),
            # so the charge rate is known from the first reading of a returning recorder.
            history: Any = snap.get("battery_samples") or ()
            samples = [BatterySample(t, p) for t, p, _ in history]
            facts = facts_from_snapshot(snap, samples, [])
            fw = self.firmware
            policy = fw.readiness(self.settings.readiness) if fw else self.settings.readiness
            readiness = evaluate(facts, policy, self.settings.clock.tolerance_ms)
            entry = dict(snap)
            entry["firmware_update"] = fw.recorder_field(snap) if fw else None
            entry.pop("battery_samples", None)
            entry["readiness"] = readiness.as_dict()
            battery = snap.get("battery")
            entry["battery_percent"] = battery.get("percent") if isinstance(battery, dict) else None
            out.append(entry)
        return out

    def sessions_changed(self) -> None:
        """Session hook: coalesce bursts of changes into one refresh."""
        if self.supervisor is not None:
            for key, session_id, state, result in self.supervisor.offload_states():
                if state in OFFLOAD_STATES or result is not None:
                    self._offload_began.setdefault(key, {})[session_id] = result
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
        current: dict[str, dict[str, Any]] = {}
        for entry in self.recorders():
            current[str(entry.get("key"))] = entry
        if self.reporter is None:
            return
        for key, entry in current.items():
            last = self._last_entry.get(key)
            if last is not None and last.get("session_id") != entry.get("session_id"):
                self._report_pulled(key)  # pulled and put back between two refreshes
            self._report_unseen(key, str(entry.get("session_id")))
            state = _public_state(entry)
            progress = state.pop("offload", None)
            if self._published.get(key) != state:
                self.reporter.set_recorder_state(key, state)
                self._published[key] = state
            self._report_progress(key, entry, progress, state.get("offload_result"))
        for gone in set(self._published) - set(current):
            self._report_pulled(gone)
            self._report_unseen(gone, None)
            self.reporter.remove_recorder(gone)
            del self._published[gone]
        for gone in set(self._offload_began) - set(current):
            self._report_unseen(gone, None)  # docked and gone between two refreshes

    def _report_pulled(self, key: str) -> None:
        """A recorder left its bay (or its docking session ended and a new one began): if
        its offload had begun and no summary was sent, the session ended without a result;
        its final message says it was interrupted."""
        last = self._last_entry.pop(key, None)
        sent = self._progress_sent.pop(key, None)
        if last is None:
            return
        session = str(last.get("session_id"))
        began = self._offload_began.get(key, {})
        offload_began = session in began or last.get("state") in OFFLOAD_STATES
        known = began.pop(session, None)  # its result, if it ended with one unseen
        if not began:
            self._offload_began.pop(key, None)
        if sent is not None and sent[0] == session:
            if sent[1]:
                return  # its summary is out
        elif not offload_began or last.get("offload_result"):
            return  # it left before its offload began (or its summary is out)
        result: Mapping[str, Any] = payloads.result_fields(known) if known is not None else {
            "outcome": "interrupted",
            "detail": "the recorder left the bay before its offload finished"}
        progress = last.get("offload") or _progress_from_result(result)
        if sent is None or sent[0] != session:
            self.reporter.offload_progress(key, progress)
        self.reporter.offload_finished(key, progress, result)

    def _report_unseen(self, key: str, current: str | None) -> None:
        """Sessions that began an offload and ended between two refreshes, never seen by
        one: each still gets its progress message and its summary (`interrupted` if it
        ended without a result)."""
        began = self._offload_began.get(key)
        if not began:
            return
        for session in sorted(set(began) - {current}):
            result = began.pop(session)
            if result is None:
                result = {"outcome": "interrupted",
                          "detail": "the recorder left the bay before its offload finished"}
            else:
                result = payloads.result_fields(result)
            progress = _progress_from_result(result)
            self.reporter.offload_progress(key, progress)
            self.reporter.offload_finished(key, progress, result)
        if not began:
            del self._offload_began[key]

    def _report_progress(self, key: str, entry: Mapping[str, Any],
                         progress: Mapping[str, Any] | None,
                         result: Mapping[str, Any] | None) -> None:
        """Every offload publishes at least one progress message and one final summary,
        however short it was (a fast offload may finish between two refreshes)."""
        session = str(entry.get("session_id"))
        sent = self._progress_sent.get(key)
        if sent is not None and sent[0] != session:
            sent = None
        self._last_entry[key] = entry
        if progress and entry.get("state") == "offloading":
            self.reporter.offload_progress(key, progress)
            self._progress_sent[key] = (session, False)
        elif result is not None and (sent is None or not sent[1]):
            values = progress or _progress_from_result(result)
            if sent is None:
                self.reporter.offload_progress(key, values)
            self.reporter.offload_finished(key, values, result)
            self._progress_sent[key] = (session, True)
            self._offload_began.get(key, {}).pop(session, None)

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
        return {"dock_id": self.settings.dock.id, "recorders": rows,
                "time": payloads.iso(time.time())}

    async def status(self) -> dict[str, Any]:
        reporter = self.reporter
        stats = asdict(reporter.stats) if reporter is not None else {}
        return {
            "dock_id": self.settings.dock.id,
            "version": __version__,
            "broker_connected": bool(reporter.connected) if reporter is not None else None,
            "outbox_depth": stats.get("outbox_depth"),
            "store_free_bytes": self.store_free_bytes,
            "bays": [_times_rfc3339(b) for b in self.recorders()],
        }

    # --- entry points for commands --------------------------------------------------------

    def control_handlers(self) -> dict[str, Any]:
        async def status(_: dict[str, Any]) -> dict[str, Any]:
            return await self.status()

        async def readiness(_: dict[str, Any]) -> dict[str, Any]:
            return self.readiness_report()

        async def checkpoint(_: dict[str, Any]) -> dict[str, Any]:
            return await self.sign_checkpoint()

        return {"status": status, "readiness": readiness, "checkpoint": checkpoint}

    async def sign_checkpoint(self) -> dict[str, Any]:
        """Sign the ledger's newest entry now (if not yet signed); the latest checkpoint."""
        from agent.store.ledger import recent_checkpoints

        ledger = self.ledger
        if ledger is None:
            return {"seq": None}
        await self.db.write(ledger.checkpoint)
        latest = await self.db.read(lambda conn: recent_checkpoints(conn, 1))
        if latest and self.reporter is not None:
            self.reporter.checkpoint_signed()
        return {"seq": latest[-1].seq if latest else None}

    def actions(self, lifecycle: Any = None, firmware: Any = None) -> Any:
        from agent.commands import AgentActions

        return AgentActions(self, lifecycle, firmware)


def _iso(value: object) -> str | None:
    t = _num(value)
    return None if t is None else payloads.iso(t)


def _public_state(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The retained recorder state on MQTT in the documented shape (docs/mqtt.md, schema
    `recorder-state`): exactly the documented fields, times in RFC 3339, no footage, no
    secrets. Facts not read yet are left out rather than sent as null."""
    state: dict[str, Any] = {
        "bay": str(entry.get("bay") or ""),
        "state": entry.get("state"),
        "docked_at": _iso(entry.get("docked_at")),
        "storage_only": bool(entry.get("storage_only")),
        "identity": {k: str(entry.get(k) or "") for k in ("model", "hardware_rev", "firmware")},
        "officer": (
            {k: str(entry.get(k) or "") for k in ("officer_no", "officer_name", "unit_no",
                                                  "unit_name")}
            if entry.get("officer_no") else None
        ),
        "faults": [f.get("code") for f in entry.get("faults", [])],
        "unchecked": list(entry.get("unchecked") or []),
    }
    if isinstance(entry.get("firmware_update"), Mapping):
        state["firmware_update"] = dict(entry["firmware_update"])
    battery = entry.get("battery")
    if isinstance(battery, Mapping) and _num(battery.get("percent")) is not None:
        state["battery"] = {k: battery[k] for k in (
            "percent", "charging", "millivolts", "temperature_c", "cycle_count",
            "health_percent") if battery.get(k) is not None}
        at = _iso(entry.get("battery_at"))
        if at is not None:
            state["battery"]["at"] = at
    storage = entry.get("storage")
    if isinstance(storage, Mapping) and "free_bytes" in storage:
        state["storage"] = {k: storage[k] for k in (
            "total_bytes", "free_bytes", "file_count", "recording") if storage.get(k) is not None}
    clock = entry.get("clock")
    if isinstance(clock, Mapping) and _num(clock.get("drift_before_ms")) is not None:
        drift = clock.get("drift_after_ms", clock.get("drift_before_ms"))
        state["clock"] = {
            "drift_ms": drift,
            "corrected": clock.get("action") == "set" and bool(clock.get("set_ok")),
            "action": clock.get("action"),
            "dock_synchronised": bool(clock.get("dock_synchronised")),
            "tolerance_ms": clock.get("tolerance_ms"),
        }
    readiness = entry.get("readiness")
    if isinstance(readiness, Mapping):
        state["readiness"] = {
            "verdict": readiness.get("verdict"),
            "reasons": [{"code": r.get("code"), "message": r.get("message")}
                        for r in readiness.get("reasons") or []],
            "eta_s": readiness.get("eta_s"),
        }
    progress = entry.get("offload")
    if isinstance(progress, Mapping):
        state["offload"] = payloads.progress_fields(progress)
    result = entry.get("offload_result")
    if isinstance(result, Mapping):
        state["offload_result"] = payloads.result_fields(result)
    return {k: v for k, v in state.items() if v is not None or k == "officer"}


def _times_rfc3339(entry: Mapping[str, Any]) -> dict[str, Any]:
    """dockctl's view of a bay: its times in RFC 3339 (the one format of every output)."""
    out = dict(entry)
    for key in ("docked_at", "state_since", "battery_at"):
        if key in out:
            out[key] = _iso(out[key])
    return out


def _progress_from_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Progress counters of an offload known only by its result (it never reported one)."""
    files = sum(int(result.get(k, 0) or 0) for k in ("stored", "already_stored", "failed"))
    done = int(result.get("bytes_copied", 0) or 0) + int(result.get("resumed_bytes", 0) or 0)
    return {"files_done": files, "files_total": files, "bytes_done": done,
            "bytes_total": done, "rate_bps": 0.0, "eta_s": 0.0, "current_file": None}
