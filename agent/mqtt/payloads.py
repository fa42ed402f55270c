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


def health(dock_id: str, bd_seq: int, now: float, agent_version: str,
           sample: Mapping[str, Any], outbox: OutboxStats,
           mqtt: Mapping[str, int]) -> dict[str, Any]:
    oldest = None if outbox.oldest_created_at is None else max(0.0, now - outbox.oldest_created_at)
    return {
        "dock_id": dock_id, "time": iso(now), "bdSeq": bd_seq, "agent_version": agent_version,
        "health": dict(sample),
        "outbox": {"depth": outbox.depth, "oldest_age_s": oldest, "dropped": outbox.dropped},
        "mqtt": dict(mqtt),
    }


_RESERVED = ("dock_id", "serial", "docked", "time", "bdSeq")


def recorder_birth(dock_id: str, serial: str, bd_seq: int, now: float,
                   state: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in state.items() if k not in _RESERVED}
    out.update(dock_id=dock_id, serial=serial, docked=True, time=iso(now), bdSeq=bd_seq)
    return out


def recorder_death(dock_id: str, serial: str, bd_seq: int, now: float) -> dict[str, Any]:
    return {"dock_id": dock_id, "serial": serial, "docked": False, "time": iso(now),
            "bdSeq": bd_seq}


def progress(dock_id: str, serial: str, now: float,
             values: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k not in _RESERVED}
    out.update(dock_id=dock_id, serial=serial, time=iso(now))
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
