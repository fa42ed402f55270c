"""Fleet view: a reference consumer for the ops team.

Subscribes to every dock's status, health, recorder state/progress and events under the
prefix and keeps a live model: docks (online, bdSeq, health, outbox), recorders (docked,
readiness, battery, officer, last offload, progress) and open faults. Recorder states whose
bdSeq is older than their dock's current session, or whose dock is offline, are shown as
stale (Sparkplug rule: a dock's death makes its recorders' state unknown).
`run_fleet()` is what `dockctl fleet` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, TextIO

from agent.mqtt import strictjson
from agent.mqtt.backoff import Backoff
from agent.mqtt.checkpoints import CheckpointWatch
from agent.mqtt.errors import MqttError, PayloadInvalid
from agent.mqtt.fleet_table import render_table
from agent.mqtt.topics import fleet_filters
from agent.mqtt.transport import PahoTransport
from agent.mqtt.validation import schema_for_topic, schema_names, validate
from agent.settings import MqttSettings


@dataclass
class RecorderView:
    dock_id: str
    serial: str
    docked: bool = False
    bd_seq: int = 0
    bay: str = ""
    officer: str = ""
    battery_percent: float | None = None
    verdict: str = "UNKNOWN"
    reasons: list[str] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    last_offload: str | None = None
    updated: str | None = None
    marked_stale: bool = False  # the dock said so itself on a clean stop


@dataclass
class DockView:
    dock_id: str
    online: bool = False
    bd_seq: int = 0
    since: str | None = None
    agent_version: str = ""
    health: dict[str, Any] = field(default_factory=dict)
    outbox_depth: int | None = None
    dropped: int | None = None
    last_event_seq: int = 0
    # fault_id (as text) -> the open fault, from `fault` / `fault_cleared` events
    open_faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoint_seq: int | None = None
    custody_alarms: list[dict[str, str]] = field(default_factory=list)
    # Gap repair: outbox seqs missing from the event stream (since this viewer started),
    # when each was first missed (monotonic), and seqs the dock said it cannot re-send.
    missing: dict[int, float] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    seen_seqs: int = 0
    invalid_messages: int = 0  # messages under this dock's prefix that were refused
    last_invalid: dict[str, str] | None = None  # {"topic", "error"} of the latest one


class FleetModel:
    """Pure: feed it (topic, payload) pairs; read `snapshot()` (shown by fleet_table)."""

    def __init__(self, prefix: str = "dock/v1", *, checkpoint_state: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.clock = clock
        self.docks: dict[str, DockView] = {}
        self.recorders: dict[tuple[str, str], RecorderView] = {}
        self.checkpoints = CheckpointWatch(checkpoint_state)

    def _dock(self, dock_id: str) -> DockView:
        return self.docks.setdefault(dock_id, DockView(dock_id))

    def apply(self, topic: str, payload: bytes) -> bool:
        """Update from one message; False when it was not understood (ignored).

        Every message is checked on its own (strict JSON, its topic's schema, and its
        `dock_id`/`serial` against the topic): a bad one is counted against its dock and
        shown as such, and never stops the view of the others."""
        if not topic.startswith(self.prefix + "/"):
            return False
        levels = topic[len(self.prefix) + 1:].split("/")
        if len(levels) < 2:
            return False
        dock_id, rest = levels[0], levels[1:]
        if not payload:
            if rest[:1] == ["recorder"] and len(rest) == 3 and rest[2] == "state":
                self.recorders.pop((dock_id, rest[1]), None)
                return True
            return False
        schema = schema_for_topic(rest)
        resend_reply = rest == ["reply", "resend"]  # answers to this view's own requests
        if schema is None or schema.startswith("command-") \
                or (schema == "reply" and not resend_reply) or schema not in _state_schemas():
            return False
        try:
            body = strictjson.loads(payload)
            validate(schema, body)
            _check_subject(dock_id, rest, body)
        except (strictjson.JsonRejected, PayloadInvalid, _WrongSubject) as exc:
            self._refuse(dock_id, topic, str(exc))
            return True
        try:
            self._dispatch(dock_id, rest, body)
        except Exception as exc:  # a shape the schema allows but this view cannot use
            self._refuse(dock_id, topic, f"{type(exc).__name__}: {exc}")
        return True

    def _refuse(self, dock_id: str, topic: str, error: str) -> None:
        dock = self._dock(dock_id)
        dock.invalid_messages += 1
        dock.last_invalid = {"topic": topic[:256], "error": error[:400]}

    def _dispatch(self, dock_id: str, rest: list[str], body: dict[str, Any]) -> None:
        match rest:
            case ["status"]:
                self._on_status(dock_id, body)
            case ["health"]:
                self._on_health(dock_id, body)
            case ["recorder", serial, "state"]:
                self._on_recorder(dock_id, serial, body)
            case ["recorder", serial, "progress"]:
                rec = self.recorders.setdefault((dock_id, serial), RecorderView(dock_id, serial))
                rec.progress = {k: v for k, v in body.items() if k not in ("dock_id", "serial")}
            case ["events", stream]:
                self._on_event(dock_id, stream, body)
            case ["checkpoint"]:
                self._on_checkpoint(dock_id, body)
            case ["reply", "resend"]:
                self._on_resend_reply(dock_id, body)

    def _on_status(self, dock_id: str, body: dict[str, Any]) -> None:
        dock = self._dock(dock_id)
        bd_seq = int(body.get("bdSeq", 0))
        if body.get("state") == "online":
            dock.online, dock.bd_seq = True, bd_seq
            dock.since = body.get("time")
            dock.agent_version = str(body.get("agent_version", ""))
        elif bd_seq >= dock.bd_seq:  # an old session's Will must not kill the new one
            dock.online, dock.bd_seq = False, bd_seq
            dock.since = body.get("time")

    def _on_checkpoint(self, dock_id: str, body: dict[str, Any]) -> None:
        """A signed ledger checkpoint that does not extend the last one is an alarm."""
        dock = self._dock(dock_id)
        j = self.checkpoints.observe(dock_id, body)
        if j.alarm:
            dock.custody_alarms.append({"alarm": j.verdict, "detail": j.detail,
                                        "seq": str(body.get("seq"))})
        else:
            dock.checkpoint_seq = self.checkpoints.last[dock_id]["seq"]

    def _on_health(self, dock_id: str, body: dict[str, Any]) -> None:
        dock = self._dock(dock_id)
        dock.health = dict(body.get("health") or {})
        ob = body.get("outbox") or {}
        dock.outbox_depth = ob.get("depth")
        dock.dropped = ob.get("dropped")
        dock.agent_version = str(body.get("agent_version", dock.agent_version))

    def _on_recorder(self, dock_id: str, serial: str, body: dict[str, Any]) -> None:
        rec = self.recorders.setdefault((dock_id, serial), RecorderView(dock_id, serial))
        rec.docked = bool(body.get("docked"))
        rec.bd_seq = int(body.get("bdSeq", 0))
        rec.updated = body.get("time")
        rec.marked_stale = body.get("stale") is True
        if not rec.docked:
            rec.progress = None
            return
        rec.bay = str(body.get("bay", ""))
        officer = body.get("officer") or {}
        rec.officer = str(officer.get("officer_no", "")) if isinstance(officer, dict) else ""
        battery = body.get("battery") or {}
        rec.battery_percent = battery.get("percent") if isinstance(battery, dict) else None
        ready = body.get("readiness") or {}
        rec.verdict = str(ready.get("verdict", "UNKNOWN")) if isinstance(ready, dict) else "?"
        reasons = ready.get("reasons", []) if isinstance(ready, dict) else []
        rec.reasons = [str(r.get("message") or r.get("code")) if isinstance(r, dict) else str(r)
                       for r in reasons if r] if isinstance(reasons, list) else []
        if isinstance(body.get("offload"), dict):
            rec.progress = body["offload"]

    def _on_event(self, dock_id: str, stream: str, body: dict[str, Any]) -> None:
        dock = self._dock(dock_id)
        seq = body.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
            self._track_seq(dock, seq)
        entry = body.get("payload") or {}
        if not isinstance(entry, dict):
            return
        subject = body.get("subject")
        kind = str(entry.get("kind", ""))
        if stream == "custody" and subject:
            if kind == "offloaded":
                rec = self.recorders.setdefault((dock_id, subject),
                                                RecorderView(dock_id, subject))
                rec.last_offload = entry.get("time") or body.get("created_at")
        elif stream == "fault":
            data = entry.get("data") or {}
            if not isinstance(data, dict):
                return
            fault_id = data.get("fault_id")
            key = f"{fault_id}" if fault_id is not None else f"{subject or '-'}:{data.get('code')}"
            if kind == "fault_cleared":
                dock.open_faults.pop(key, None)
            elif kind == "fault":
                dock.open_faults[key] = {
                    "fault_id": fault_id, "subject": subject, "code": data.get("code"),
                    "severity": data.get("severity"),
                    "time": entry.get("time") or body.get("created_at"),
                    "message": data.get("reason"), "repeated": bool(data.get("repeated")),
                }

    def _track_seq(self, dock: DockView, seq: int) -> None:
        """Outbox seqs are consecutive per dock: a jump is a gap (lost after the broker's
        acknowledgement) until the missing events arrive, re-sent or late."""
        dock.seen_seqs += 1
        if dock.seen_seqs == 1:
            dock.last_event_seq = seq
            return
        if seq > dock.last_event_seq:
            now = self.clock()
            for missed in range(max(dock.last_event_seq + 1, seq - MAX_TRACKED_GAP), seq):
                dock.missing.setdefault(missed, now)
            dock.last_event_seq = seq
        else:
            dock.missing.pop(seq, None)

    def _on_resend_reply(self, dock_id: str, body: dict[str, Any]) -> None:
        result = body.get("result")
        if not body.get("ok") or not isinstance(result, dict):
            return
        dock = self._dock(dock_id)
        for seq in list(result.get("unavailable") or []) + list(result.get("unknown") or []):
            if isinstance(seq, int) and dock.missing.pop(seq, None) is not None:
                dock.lost.add(seq)

    def gaps_to_request(self, grace_s: float) -> list[tuple[str, int, int]]:
        """(dock, from_seq, to_seq) ranges missing for longer than `grace_s`: in-flight
        events get that long to arrive before the dock is asked to re-send them."""
        now = self.clock()
        out = []
        for dock_id in sorted(self.docks):
            dock = self.docks[dock_id]
            due = sorted(q for q, t in dock.missing.items() if now - t >= grace_s)
            for first, last in _ranges(due):
                out.append((dock_id, first, last))
        return out

    def asked(self, dock_id: str, first: int, last: int) -> None:
        """A resend was requested: wait another grace period before asking again."""
        dock = self._dock(dock_id)
        now = self.clock()
        for q in range(first, last + 1):
            if q in dock.missing:
                dock.missing[q] = now

    def stale(self, rec: RecorderView) -> bool:
        dock = self.docks.get(rec.dock_id)
        return (rec.marked_stale or dock is None or not dock.online
                or rec.bd_seq < dock.bd_seq)

    def snapshot(self) -> dict[str, Any]:
        docks = []
        for dock_id in sorted(self.docks):
            d = self.docks[dock_id]
            recs = [r for (did, _), r in sorted(self.recorders.items()) if did == dock_id]
            docks.append({
                "dock_id": d.dock_id, "online": d.online, "bdSeq": d.bd_seq, "since": d.since,
                "agent_version": d.agent_version, "health": d.health,
                "outbox_depth": d.outbox_depth, "dropped": d.dropped,
                "last_event_seq": d.last_event_seq,
                "missing_seqs": sorted(d.missing), "lost_seqs": sorted(d.lost),
                "open_faults": list(d.open_faults.values()),
                "checkpoint_seq": d.checkpoint_seq,
                "custody_alarms": list(d.custody_alarms),
                "invalid_messages": d.invalid_messages, "last_invalid": d.last_invalid,
                "recorders": [{
                    "serial": r.serial, "docked": r.docked, "stale": self.stale(r),
                    "bay": r.bay, "officer": r.officer, "battery_percent": r.battery_percent,
                    "readiness": r.verdict, "reasons": r.reasons, "progress": r.progress,
                    "last_offload": r.last_offload, "updated": r.updated,
                } for r in recs],
            })
        return {"docks": docks}


MAX_TRACKED_GAP = 100_000  # a larger jump is a reset dock, not lost events
GAP_GRACE_S = 5.0


def _ranges(seqs: list[int], limit: int = 10_000) -> list[tuple[int, int]]:
    """Consecutive runs of sorted seqs, each at most `limit` long."""
    out: list[tuple[int, int]] = []
    for q in seqs:
        if out and q == out[-1][1] + 1 and q - out[-1][0] < limit:
            out[-1] = (out[-1][0], q)
        else:
            out.append((q, q))
    return out


class _WrongSubject(ValueError):
    """A message names another dock or recorder than its topic."""


def _check_subject(dock_id: str, rest: list[str], body: dict[str, Any]) -> None:
    if rest == ["checkpoint"]:
        return  # another dock's checkpoint under this topic is a custody alarm (wrong_dock)
    if body.get("dock_id") != dock_id:
        raise _WrongSubject(f"dock_id {str(body.get('dock_id'))[:64]!r} on the topic of dock"
                            f" {dock_id[:64]!r}")
    if rest[0] == "recorder" and body.get("serial") != rest[1]:
        raise _WrongSubject(f"serial {str(body.get('serial'))[:64]!r} on the topic of"
                            f" recorder {rest[1][:64]!r}")


@cache
def _state_schemas() -> frozenset[str]:
    return frozenset(schema_names())


def fleet_settings(
    broker: str,
    *,
    tls: bool = True,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    username: str | None = None,
    password_file: Path | None = None,
    topic_prefix: str = "dock/v1",
    protocol: str = "5",
) -> MqttSettings:
    """MqttSettings for `dockctl fleet --broker HOST:PORT [--tls ...]`."""
    host, sep, port = broker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, got {broker!r}")
    return replace(
        MqttSettings(), host=host.strip("[]"), port=int(port), tls=tls, ca_file=ca_file,
        cert_file=cert_file, key_file=key_file, username=username,
        password_file=password_file, topic_prefix=topic_prefix,
        protocol="3.1.1" if protocol == "3.1.1" else "5",
    )


async def run_fleet(
    settings: MqttSettings,
    *,
    json: bool = False,
    once: bool = False,
    out: TextIO | None = None,
    settle_s: float = 2.0,
    refresh_s: float = 2.0,
    checkpoint_state: Path | None = None,
    repair: bool = True,
    gap_grace_s: float = GAP_GRACE_S,
    model: FleetModel | None = None,
    session_expiry_s: int = 0,
) -> FleetModel:
    """Show the fleet. `once`: collect the retained state for `settle_s`, print, return.
    Otherwise print on every change (at most every `refresh_s`) until cancelled, and (with
    `repair`, which needs the central identity's right to send commands) ask docks to
    re-send events missing from their `seq` stream for longer than `gap_grace_s`.
    `session_expiry_s` > 0 keeps a broker session (with a fixed client id) across restarts
    of the view, so events published meanwhile wait at the broker."""
    stream = out or sys.stdout
    model = model or FleetModel(settings.topic_prefix, checkpoint_state=checkpoint_state)
    backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s)
    client_id = settings.client_id or f"fleet-{uuid.uuid4().hex[:10]}"

    def emit() -> None:
        if json:
            stream.write(_json_dumps(model.snapshot()) + "\n")
        else:
            stream.write(render_table(model.snapshot()) + ("" if once else "\n"))
        stream.flush()

    while True:
        transport = PahoTransport(settings, client_id, session_expiry_s=session_expiry_s)
        try:
            await transport.connect()
            for f in fleet_filters(settings.topic_prefix):
                await transport.subscribe(f, qos=1)
            backoff.reset()
            if once:
                await _collect(transport, model, settle_s)
                emit()
                return model
            requester = _GapRequester(transport, model, gap_grace_s) if repair else None
            await _follow(transport, model, refresh_s, emit, requester)
        except MqttError as exc:
            if once:
                raise
            stream.write(f"# broker: {exc}; retrying\n")
            stream.flush()
        finally:
            with contextlib.suppress(MqttError):
                await transport.disconnect()
        await asyncio.sleep(backoff.next_delay())


async def _collect(transport: PahoTransport, model: FleetModel, settle_s: float) -> None:
    """Read until nothing new has arrived for `settle_s` (retained state comes first)."""
    while True:
        try:
            async with asyncio.timeout(settle_s):
                msg = await transport.next_message()
        except TimeoutError:
            return
        model.apply(msg.topic, msg.payload)


class _GapRequester:
    """Sends `resend` commands for the model's gaps (at most one per range per grace)."""

    def __init__(self, transport: PahoTransport, model: FleetModel, grace_s: float) -> None:
        self.transport = transport
        self.model = model
        self.grace_s = grace_s

    def poll(self) -> None:
        for dock_id, first, last in self.model.gaps_to_request(self.grace_s):
            body = {"id": f"gap-{uuid.uuid4().hex[:12]}",
                    "args": {"from_seq": first, "to_seq": last}}
            topic = f"{self.model.prefix}/{dock_id}/cmd/resend"
            fut = self.transport.publish(topic, _json_dumps(body).encode())
            fut.add_done_callback(_consume)
            self.model.asked(dock_id, first, last)


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # a refused request is retried after the next grace period


async def _follow(transport: PahoTransport, model: FleetModel, refresh_s: float,
                  emit: Callable[[], None], requester: _GapRequester | None = None) -> None:
    last = 0.0
    dirty = False
    while True:
        timeout = max(0.05, refresh_s - (time.monotonic() - last)) if dirty else None
        if requester is not None:
            timeout = 1.0 if timeout is None else min(timeout, 1.0)
        try:
            async with asyncio.timeout(timeout):
                msg = await transport.next_message()
            dirty = model.apply(msg.topic, msg.payload) or dirty
        except TimeoutError:
            pass
        if requester is not None:
            requester.poll()
        if dirty and time.monotonic() - last >= refresh_s:
            emit()
            last, dirty = time.monotonic(), False


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
