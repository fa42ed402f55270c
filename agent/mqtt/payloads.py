"""Payload builders: pure functions from values to the JSON documents on each topic."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import TypeAlias

from agent.compliance.readiness import Readiness
from agent.docking_state import SessionSnapshot
from agent.domain import RecorderIdentity
from agent.store.outbox import OutboxEvent, OutboxStats

JsonObject: TypeAlias = dict[str, object]


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
    )


def encode(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def status_online(dock_id: str, bd_seq: int, now: float, agent_version: str,
                  protocol: str) -> JsonObject:
    return {"dock_id": dock_id, "state": "online", "bdSeq": bd_seq, "time": iso(now),
            "agent_version": agent_version, "protocol": protocol}


def status_offline(dock_id: str, bd_seq: int, reason: str, now: float | None) -> JsonObject:
    """The Will (reason connection-lost, no time: the broker sends it later) or a clean exit."""
    out: JsonObject = {"dock_id": dock_id, "state": "offline", "bdSeq": bd_seq,
                           "reason": reason}
    if now is not None:
        out["time"] = iso(now)
    return out


HEALTH_FIELDS = (
    "store_total_bytes", "store_free_bytes", "store_free_percent", "offload_bytes_per_day",
    "projected_days_until_full", "cpu_temp_c", "load", "mem_total_bytes",
    "mem_available_bytes", "uptime_s", "clock_synchronised", "broker_connected",
    "loop_lag_ms", "throttling_now", "throttling_since_boot", "bays", "issues",
)
UPLOAD_FIELDS = ("backlog_files", "backlog_bytes", "oldest_backlog_age_s", "uploaded_files",
                 "conflicts", "last_error")
PROGRESS_FIELDS = ("files_done", "files_total", "bytes_done", "bytes_total", "rate_bps",
                   "eta_s", "current_file")
RESULT_FIELDS = ("outcome", "detail", "stored", "already_stored", "failed", "refused", "wiped",
                 "wipe_failed", "late", "changed", "bytes_copied", "resumed_bytes")


def _items(value: object) -> list[object]:
    return list(value) if isinstance(value, Iterable) and not isinstance(value, str) else []


def _pick(value: object, keys: tuple[str, ...]) -> JsonObject:
    """`keys` of one nested object of a sample (each None when absent)."""
    got = value if isinstance(value, Mapping) else {}
    return {k: got.get(k) for k in keys}


def health_sample(sample: Mapping[str, object]) -> JsonObject:
    """The documented health object (schema `health`, `health` property) from a monitor
    sample: exactly these fields, so the contract changes only on purpose."""
    out: JsonObject = {k: sample.get(k) for k in HEALTH_FIELDS}
    out["load"] = _items(out["load"]) or [0.0, 0.0, 0.0]
    for k in ("throttling_now", "throttling_since_boot"):
        if out[k] is not None:
            out[k] = _items(out[k])
    out["bays"] = [_pick(b, ("bay", "serial", "state")) for b in _items(out["bays"])]
    out["issues"] = [_pick(i, ("code", "reason")) for i in _items(out["issues"])]
    upload = sample.get("upload")
    if isinstance(upload, Mapping):  # only with [upload] enabled
        out["upload"] = _pick(upload, UPLOAD_FIELDS)
    return out


def _outbox(now: float, outbox: OutboxStats) -> JsonObject:
    oldest = None if outbox.oldest_created_at is None else max(0.0, now - outbox.oldest_created_at)
    return {"depth": outbox.depth, "oldest_age_s": oldest, "dropped": outbox.dropped}


def sample_time(sample: Mapping[str, object], now: float) -> float:
    t = sample.get("time")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else now


def health(dock_id: str, bd_seq: int, now: float, agent_version: str,
           sample: Mapping[str, object], outbox: OutboxStats,
           mqtt: Mapping[str, int]) -> JsonObject:
    return {
        "dock_id": dock_id, "time": iso(sample_time(sample, now)), "bdSeq": bd_seq,
        "agent_version": agent_version, "health": health_sample(sample),
        "outbox": _outbox(now, outbox),
        "mqtt": {k: int(mqtt.get(k, 0)) for k in ("published", "acked", "in_flight",
                                                  "reconnects")},
    }


def health_event(now: float, sample: Mapping[str, object], outbox: OutboxStats) -> JsonObject:
    """Payload of an `events/health` outbox event (schema `event-health`)."""
    return {"time": iso(sample_time(sample, now)), "health": health_sample(sample),
            "outbox": _outbox(now, outbox)}


_RESERVED = ("dock_id", "serial", "docked", "time", "bdSeq", "stale")


def recorder_birth(dock_id: str, serial: str, bd_seq: int, now: float,
                   state: Mapping[str, object], *, stale: bool = False) -> JsonObject:
    out = {k: v for k, v in state.items() if k not in _RESERVED}
    out.update(dock_id=dock_id, serial=serial, docked=True, time=iso(now), bdSeq=bd_seq)
    if stale:
        out["stale"] = True
    return out


def recorder_death(dock_id: str, serial: str, bd_seq: int, now: float) -> JsonObject:
    return {"dock_id": dock_id, "serial": serial, "docked": False, "time": iso(now),
            "bdSeq": bd_seq}


def progress_fields(values: Mapping[str, object]) -> JsonObject:
    return {k: values[k] for k in PROGRESS_FIELDS if k in values}


def result_fields(values: Mapping[str, object]) -> JsonObject:
    return {k: values[k] for k in RESULT_FIELDS if k in values}


def progress(dock_id: str, serial: str, now: float, values: Mapping[str, object],
             result: Mapping[str, object] | None = None) -> JsonObject:
    """An offload progress message; with `result` it is the final summary (phase finished)."""
    out = progress_fields(values)
    out.update(dock_id=dock_id, serial=serial, time=iso(now),
               phase="copying" if result is None else "finished")
    if result is not None:
        out["result"] = result_fields(result)
    return out


def event(dock_id: str, ev: OutboxEvent) -> JsonObject:
    return {"event_id": ev.event_id, "seq": ev.seq, "stream": ev.stream, "dock_id": dock_id,
            "subject": ev.subject, "created_at": iso(ev.created_at), "payload": ev.payload}


def reply_ok(dock_id: str, cmd_id: str, command: str, result: Mapping[str, object],
             now: float) -> JsonObject:
    return {"id": cmd_id, "command": command, "ok": True, "dock_id": dock_id, "time": iso(now),
            "result": dict(result)}


def reply_error(dock_id: str, cmd_id: str | None, command: str, code: str, message: str,
                now: float) -> JsonObject:
    return {"id": cmd_id, "command": command, "ok": False, "dock_id": dock_id, "time": iso(now),
            "error": {"code": code, "message": message}}


def identity_fields(identity: RecorderIdentity) -> JsonObject:
    """The `identity` and `officer` parts of a recorder state, from the domain type."""
    officer: dict[str, str] | None = None
    if identity.officer_no:
        officer = {"officer_no": identity.officer_no, "officer_name": identity.officer_name,
                   "unit_no": identity.unit_no, "unit_name": identity.unit_name}
    return {
        "identity": {"model": identity.model, "hardware_rev": identity.hardware_rev,
                     "firmware": identity.firmware},
        "officer": officer,
    }


def _iso_or_none(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def recorder_state(snap: SessionSnapshot, readiness: Readiness,
                   firmware_update: Mapping[str, object] | None = None) -> JsonObject:
    """The retained recorder state (docs/mqtt.md, schema `recorder-state`): exactly the
    documented fields, times in RFC 3339, no footage, no secrets. Facts not read yet are
    left out rather than sent as null."""
    ident = snap.identity or RecorderIdentity(serial="")
    parts = identity_fields(ident)
    state: JsonObject = {
        "bay": snap.bay,
        "state": snap.state,
        "docked_at": iso(snap.docked_at),
        "storage_only": snap.storage_only,
        "identity": parts["identity"],
        "officer": parts["officer"],
        "faults": [f.code for f in snap.faults],
        "unchecked": list(snap.unchecked),
    }
    if firmware_update is not None:
        state["firmware_update"] = dict(firmware_update)
    if snap.battery is not None:
        battery = snap.battery.as_record()
        at = _iso_or_none(snap.battery_at)
        if at is not None:
            battery["at"] = at
        state["battery"] = battery
    if snap.storage is not None:
        state["storage"] = snap.storage.as_record()
    clock = snap.clock
    if clock is not None:
        state["clock"] = {
            "drift_ms": clock.drift_ms, "corrected": clock.corrected, "action": clock.action,
            "dock_synchronised": clock.dock_synchronised, "tolerance_ms": clock.tolerance_ms,
        }
    state["readiness"] = readiness.as_dict()
    if snap.offload is not None:
        state["offload"] = snap.offload.as_record()
    if snap.offload_result is not None:
        state["offload_result"] = snap.offload_result.as_record()
    return state
