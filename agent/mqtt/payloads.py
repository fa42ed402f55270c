"""Payload builders: pure functions from values to the JSON documents on each topic."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from agent.domain import RecorderIdentity
from agent.store.outbox import OutboxEvent, OutboxStats


def iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        )
    )


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def status_online(dock_id: str, bd_seq: int, now: float, agent_version: str,
                  protocol: str) -> dict[str, Any]:
    return {"dock_id": dock_id, "state": "online", "bdSeq": bd_seq, "time": iso(now),
            "agent_version": agent_version, "protocol": protocol}


def status_offline(dock_id: str, bd_seq: int, reason: str, now: float | None) -> dict[str, Any]:
    """The Will (reason connection-lost, no time: the broker sends it later) or a clean exit."""
    out: dict[str, Any] = {"dock_id": dock_id, "state": "offline", "bdSeq": bd_seq,
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


def health_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The documented health object (schema `health`, `health` property) from a monitor
    sample: exactly these fields, so the contract changes only on purpose."""
    out: dict[str, Any] = {k: sample.get(k) for k in HEALTH_FIELDS}
    out["load"] = list(out["load"] or (0.0, 0.0, 0.0))
    for k in ("throttling_now", "throttling_since_boot"):
        if out[k] is not None:
            out[k] = list(out[k])
    out["bays"] = [{"bay": b.get("bay"), "serial": b.get("serial"), "state": b.get("state")}
                   for b in out["bays"] or ()]
    out["issues"] = [{"code": i.get("code"), "reason": i.get("reason")}
                     for i in out["issues"] or ()]
    upload = sample.get("upload")
    if isinstance(upload, Mapping):  # only with [upload] enabled
        out["upload"] = {k: upload.get(k) for k in UPLOAD_FIELDS}
    return out


def _outbox(now: float, outbox: OutboxStats) -> dict[str, Any]:
    oldest = None if outbox.oldest_created_at is None else max(0.0, now - outbox.oldest_created_at)
    return {"depth": outbox.depth, "oldest_age_s": oldest, "dropped": outbox.dropped}


def sample_time(sample: Mapping[str, Any], now: float) -> float:
    t = sample.get("time")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else now


def health(dock_id: str, bd_seq: int, now: float, agent_version: str,
           sample: Mapping[str, Any], outbox: OutboxStats,
           mqtt: Mapping[str, int]) -> dict[str, Any]:
    return {
        "dock_id": dock_id, "time": iso(sample_time(sample, now)), "bdSeq": bd_seq,
        "agent_version": agent_version, "health": health_sample(sample),
        "outbox": _outbox(now, outbox),
        "mqtt": {k: int(mqtt.get(k, 0)) for k in ("published", "acked", "in_flight",
                                                  "reconnects")},
    }


def health_event(now: float, sample: Mapping[str, Any], outbox: OutboxStats) -> dict[str, Any]:
    """Payload of an `events/health` outbox event (schema `event-health`)."""
    return {"time": iso(sample_time(sample, now)), "health": health_sample(sample),
            "outbox": _outbox(now, outbox)}


_RESERVED = ("dock_id", "serial", "docked", "time", "bdSeq", "stale")


def recorder_birth(dock_id: str, serial: str, bd_seq: int, now: float,
                   state: Mapping[str, Any], *, stale: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in state.items() if k not in _RESERVED}
    out.update(dock_id=dock_id, serial=serial, docked=True, time=iso(now), bdSeq=bd_seq)
    if stale:
        out["stale"] = True
    return out


def recorder_death(dock_id: str, serial: str, bd_seq: int, now: float) -> dict[str, Any]:
    return {"dock_id": dock_id, "serial": serial, "docked": False, "time": iso(now),
            "bdSeq": bd_seq}


def progress_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in PROGRESS_FIELDS if k in values}


def result_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in RESULT_FIELDS if k in values}


def progress(dock_id: str, serial: str, now: float, values: Mapping[str, Any],
             result: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An offload progress message; with `result` it is the final summary (phase finished)."""
    out = progress_fields(values)
    out.update(dock_id=dock_id, serial=serial, time=iso(now),
               phase="copying" if result is None else "finished")
    if result is not None:
        out["result"] = result_fields(result)
    return out


def event(dock_id: str, ev: OutboxEvent) -> dict[str, Any]:
    return {"event_id": ev.event_id, "seq": ev.seq, "stream": ev.stream, "dock_id": dock_id,
            "subject": ev.subject, "created_at": iso(ev.created_at), "payload": ev.payload}


def reply_ok(dock_id: str, cmd_id: str, command: str, result: Mapping[str, Any],
             now: float) -> dict[str, Any]:
    return {"id": cmd_id, "command": command, "ok": True, "dock_id": dock_id, "time": iso(now),
            "result": dict(result)}


def reply_error(dock_id: str, cmd_id: str | None, command: str, code: str, message: str,
                now: float) -> dict[str, Any]:
    return {"id": cmd_id, "command": command, "ok": False, "dock_id": dock_id, "time": iso(now),
            "error": {"code": code, "message": message}}


def identity_fields(identity: RecorderIdentity) -> dict[str, Any]:
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
