"""The dock as operators see it: derived from the sessions, never a second source of truth.

`DockView` turns session snapshots (typed, `agent.docking_state`) into per-recorder views
with a readiness verdict and pushes them to its publisher (the MQTT reporter's retained
state, offload progress and summaries). It keeps nothing of its own: battery samples (for
charge-rate ETAs) come with the sessions, which load them from the durable history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.compliance.readiness import (
    BatterySample,
    Readiness,
    RecorderFacts,
    evaluate,
    learned_charge_rate_per_s,
)
from agent.docking_state import OffloadProgressFacts, OffloadResult, SessionSnapshot
from agent.mqtt import payloads
from agent.settings import ReadinessSettings, Settings

# Session states in which the offload may have begun (storage unlocked for it, or later).
OFFLOAD_STATES = frozenset({"storage_unlocked", "mounted", "offloading"})
COALESCE_S = 0.2  # progress callbacks fire per chunk; views refresh at most 5x a second
# (key, session id, state, offload begun copying, offload result known) of a live session:
# when any of these changes, central hears of it at once.
Milestone = tuple[str, str, str, bool, bool]

# Conditions readiness judges itself from live facts; their faults would only repeat them.
_SELF_JUDGED = frozenset({"firmware_not_allowed", "officer_unassigned"})


class SessionBoard(Protocol):
    """The live docking sessions, as the view reads them."""

    def snapshot(self) -> list[SessionSnapshot]: ...

    def offload_states(self) -> list[tuple[str, str, str, OffloadResult | None]]:
        """(key, session id, state, offload result) of each live session."""
        ...

    def milestones(self) -> list[Milestone]:
        """Each live session's milestone (cheap enough for every change)."""
        ...


class FirmwareView(Protocol):
    """What recorder firmware (agent.firmware) adds to the view: central allowlists for
    readiness, and each recorder's `firmware_update` field."""

    def readiness(self, settings: ReadinessSettings) -> ReadinessSettings: ...
    def recorder_field(self, snap: Mapping[str, object]) -> dict[str, object] | None: ...


class RecorderPublisher(Protocol):
    """Where recorder state goes (the MQTT reporter)."""

    def set_recorder_state(self, serial: str, state: Mapping[str, object]) -> None: ...
    def remove_recorder(self, serial: str) -> None: ...
    def offload_progress(self, serial: str, progress: Mapping[str, object]) -> None: ...
    def offload_finished(self, serial: str, progress: Mapping[str, object],
                         result: Mapping[str, object]) -> None: ...


class RecorderFeed:
    """Fans the view's output out to its subscribers (none when MQTT is off).

    The view is built before the reporter (whose command actions read the view), so the
    reporter subscribes to this feed instead of being patched into the view."""

    def __init__(self) -> None:
        self._subscribers: list[RecorderPublisher] = []

    def subscribe(self, publisher: RecorderPublisher) -> None:
        self._subscribers.append(publisher)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def set_recorder_state(self, serial: str, state: Mapping[str, object]) -> None:
        for p in self._subscribers:
            p.set_recorder_state(serial, state)

    def remove_recorder(self, serial: str) -> None:
        for p in self._subscribers:
            p.remove_recorder(serial)

    def offload_progress(self, serial: str, progress: Mapping[str, object]) -> None:
        for p in self._subscribers:
            p.offload_progress(serial, progress)

    def offload_finished(self, serial: str, progress: Mapping[str, object],
                         result: Mapping[str, object]) -> None:
        for p in self._subscribers:
            p.offload_finished(serial, progress, result)


@dataclass(frozen=True, slots=True)
class RecorderView:
    """One docked recorder: its session's facts and the readiness verdict on them."""

    snapshot: SessionSnapshot
    readiness: Readiness
    firmware_update: Mapping[str, object] | None = None

    @property
    def offloading(self) -> bool:
        return self.snapshot.offloading

    def as_record(self) -> dict[str, object]:
        """dockctl's and the metrics' flat shape of a bay."""
        out = self.snapshot.as_record()
        out["readiness"] = self.readiness.as_dict()
        out["firmware_update"] = (dict(self.firmware_update)
                                  if self.firmware_update is not None else None)
        battery = self.snapshot.battery
        out["battery_percent"] = battery.percent if battery is not None else None
        return out


def facts_from_snapshot(snap: SessionSnapshot, extra_faults: Sequence[str] = (),
                        firmware_update: Mapping[str, object] | None = None) -> RecorderFacts:
    """What readiness judges, from one session's facts (and its `firmware_update` field: an
    update in progress is never READY). The session's samples include this pack's earlier
    dockings (durable history), so the charge rate is known from the first reading of a
    returning recorder."""
    battery, result, ident = snap.battery, snap.offload_result, snap.identity
    return RecorderFacts(
        battery_percent=float(battery.percent) if battery is not None else None,
        charging=battery.charging if battery is not None else False,
        battery_samples=[BatterySample(t, p) for t, p, _ in snap.battery_samples],
        free_bytes=snap.storage.free_bytes if snap.storage is not None else None,
        clock_checked=snap.clock is not None,
        clock_drift_ms=float(snap.clock.drift_ms) if snap.clock is not None else None,
        offload_complete=result.complete if result is not None else False,
        files_pending=result.files_pending if result is not None else 0,
        firmware=ident.firmware if ident is not None else None,
        model=ident.model if ident is not None else None,
        learned_charge_rate_per_s=learned_charge_rate_per_s(snap.battery_samples),
        officer_no=snap.officer_no,
        open_faults=[f.code for f in snap.faults if f.code not in _SELF_JUDGED]
        + list(extra_faults),
        firmware_state=str(firmware_update.get("state")) if firmware_update else None,
    )


def recorder_views(snapshots: Sequence[SessionSnapshot], settings: Settings,
                   firmware: FirmwareView | None = None) -> list[RecorderView]:
    policy = settings.readiness if firmware is None else firmware.readiness(settings.readiness)
    views = []
    for s in snapshots:
        field = firmware.recorder_field(s.as_record()) if firmware else None
        facts = facts_from_snapshot(s, firmware_update=field)
        views.append(RecorderView(s, evaluate(facts, policy, settings.clock.tolerance_ms), field))
    return views


def readiness_report(views: Sequence[RecorderView], dock_id: str,
                     now: float) -> dict[str, object]:
    """The pre-shift readiness list (dockctl readiness, the `readiness` command)."""
    rows: list[dict[str, object]] = []
    for v in views:
        s, r = v.snapshot, v.readiness.as_dict()
        ident = s.identity
        rows.append({
            "bay": s.bay,
            "serial": s.serial or s.key,
            "officer": s.officer_no,
            "officer_name": (ident.officer_name or None) if ident is not None else None,
            "verdict": r["verdict"],
            "reasons": r["reasons"],
            "eta_s": r["eta_s"],
        })
    return {"dock_id": dock_id, "recorders": rows, "time": payloads.iso(now)}


class DockView:
    """Keeps the publisher in step with the sessions: retained state per recorder, and
    one progress message and one final summary per offload, however short it was."""

    def __init__(self, settings: Settings, sessions: SessionBoard,
                 publisher: RecorderPublisher, firmware: FirmwareView | None = None) -> None:
        self.settings = settings
        self._firmware = firmware
        self._sessions = sessions
        self._publisher = publisher
        self._published: dict[str, dict[str, object]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None  # the milestones' refresh, next loop turn
        self._due: set[str] = set()  # keys whose milestone changed since their refresh
        self._milestones: list[Milestone] = []
        self._offloads = _OffloadReports(publisher)

    def recorders(self) -> list[RecorderView]:
        """One view per docked recorder: the session's facts plus readiness."""
        return recorder_views(self._sessions.snapshot(), self.settings, self._firmware)

    def readiness_report(self, now: float) -> dict[str, object]:
        return readiness_report(self.recorders(), self.settings.dock.id, now)

    def sessions_changed(self) -> None:
        """Session hook. A milestone (a docking, a new state, the first bytes copied, the
        offload's result, an undocking) is published at the next loop turn, so central
        follows a docking as it happens; mere progress is coalesced into at most one
        refresh per COALESCE_S (progress callbacks fire per chunk, on every bay)."""
        for key, session_id, state, result in self._sessions.offload_states():
            if state in OFFLOAD_STATES or result is not None:
                self._offloads.began(key, session_id, result)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.refresh()
            return
        milestones = self._sessions.milestones()
        if milestones != self._milestones:
            self._due |= {m[0] for m in set(milestones) ^ set(self._milestones)}
            self._milestones = milestones
            if self._soon is None:
                self._soon = loop.call_soon(self._refresh_due)
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(COALESCE_S, self.refresh)

    def _refresh_due(self) -> None:
        self._soon = None
        due, self._due = self._due, set()
        self.refresh(only=due)

    def refresh(self, only: set[str] | None = None) -> None:
        """Push retained state, hand progress and summaries to the publisher: of every
        recorder, or (`only`) of those whose milestone changed (a docking must not wait
        for the views of every other bay)."""
        if only is None:
            if self._flush_handle is not None:
                self._flush_handle.cancel()  # called directly: a pending one has nothing to do
            self._flush_handle = None
            self._due.clear()
        snapshots = self._sessions.snapshot()
        live = {s.key for s in snapshots}
        if only is not None:
            snapshots = [s for s in snapshots if s.key in only]
        for view in recorder_views(snapshots, self.settings, self._firmware):
            self._push(view)
        for gone in set(self._published) - live:
            self._offloads.pulled(gone)
            self._offloads.unseen(gone, None)
            self._publisher.remove_recorder(gone)
            del self._published[gone]
        self._offloads.forget_all_but(live)

    def _push(self, view: RecorderView) -> None:
        snap = view.snapshot
        key = snap.key
        self._offloads.seen(key, snap)
        state = payloads.recorder_state(snap, view.readiness, view.firmware_update)
        if snap.offloading:
            # live progress has its own topic (the publisher keeps its latest in the
            # retained state); once the offload ended, its final counters stay in every
            # state, so no later change (a battery poll) drops them from the retained one
            state.pop("offload", None)
        if self._published.get(key) != state:
            self._publisher.set_recorder_state(key, state)
            self._published[key] = state
        self._offloads.report(key, snap)


class _OffloadReports:
    """Every offload publishes at least one progress message and one final summary. A
    short session can begin (even finish) its offload and end between two coalesced
    refreshes; its summary is still owed (`interrupted` if it ended without a result)."""

    def __init__(self, publisher: RecorderPublisher) -> None:
        self._publisher = publisher
        # key -> (session id, final summary sent) of the offload last reported
        self._sent: dict[str, tuple[str, bool]] = {}
        self._last: dict[str, SessionSnapshot] = {}  # as last seen, per recorder
        # key -> {session id: result or None} of sessions whose offload began
        self._began: dict[str, dict[str, OffloadResult | None]] = {}

    def began(self, key: str, session_id: str, result: OffloadResult | None) -> None:
        self._began.setdefault(key, {})[session_id] = result

    def seen(self, key: str, snap: SessionSnapshot) -> None:
        last = self._last.get(key)
        if last is not None and last.session_id != snap.session_id:
            self.pulled(key)  # pulled and put back between two refreshes
        self.unseen(key, snap.session_id)

    def forget_all_but(self, current: set[str]) -> None:
        for gone in set(self._began) - current:
            self.unseen(gone, None)  # docked and gone between two refreshes

    def _finish(self, key: str, progress: OffloadProgressFacts, result: OffloadResult,
                *, with_progress: bool) -> None:
        values = progress.as_record()
        if with_progress:
            self._publisher.offload_progress(key, values)
        self._publisher.offload_finished(key, values, result.as_record())

    def pulled(self, key: str) -> None:
        """A recorder left its bay (or its session ended and a new one began): if its
        offload had begun and no summary was sent, its final message says so."""
        last = self._last.pop(key, None)
        sent = self._sent.pop(key, None)
        if last is None:
            return
        session = last.session_id
        began = self._began.get(key, {})
        offload_began = session in began or last.state in OFFLOAD_STATES
        known = began.pop(session, None)  # its result, if it ended with one unseen
        if not began:
            self._began.pop(key, None)
        if sent is not None and sent[0] == session:
            if sent[1]:
                return  # its summary is out
        elif not offload_began or last.offload_result is not None:
            return  # it left before its offload began (or its summary is out)
        result = known if known is not None else OffloadResult.left_early()
        progress = last.offload or result.as_progress()
        self._finish(key, progress, result, with_progress=sent is None or sent[0] != session)

    def unseen(self, key: str, current: str | None) -> None:
        """Sessions that began an offload and ended between two refreshes, never seen by
        one: each still gets its progress message and its summary."""
        began = self._began.get(key)
        if not began:
            return
        for session in sorted(set(began) - {current}):
            result = began.pop(session) or OffloadResult.left_early()
            self._finish(key, result.as_progress(), result, with_progress=True)
        if not began:
            del self._began[key]

    def report(self, key: str, snap: SessionSnapshot) -> None:
        session = snap.session_id
        sent = self._sent.get(key)
        if sent is not None and sent[0] != session:
            sent = None
        self._last[key] = snap
        progress, result = snap.offload, snap.offload_result
        if progress is not None and snap.offloading:
            self._publisher.offload_progress(key, progress.as_record())
            self._sent[key] = (session, False)
        elif result is not None and (sent is None or not sent[1]):
            self._finish(key, progress or result.as_progress(), result,
                         with_progress=sent is None)
            self._sent[key] = (session, True)
            self._began.get(key, {}).pop(session, None)


def status_document(views: Sequence[RecorderView], *, dock_id: str, version: str,
                    broker_connected: bool | None, outbox_depth: int | None,
                    store_free_bytes: object) -> dict[str, object]:
    """dockctl status: the dock and its bays, times in RFC 3339 (the one output format)."""
    bays: list[dict[str, object]] = []
    for v in views:
        bay = v.as_record()
        for key in ("docked_at", "state_since", "battery_at"):
            t = bay.get(key)
            bay[key] = payloads.iso(t) if isinstance(t, int | float) else None
        bays.append(bay)
    return {"dock_id": dock_id, "version": version, "broker_connected": broker_connected,
            "outbox_depth": outbox_depth, "store_free_bytes": store_free_bytes, "bays": bays}
