"""Pure parts: throttle, backoff, topics, payload builders against their schemas."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from agent.mqtt import payloads
from agent.mqtt.backoff import Backoff
from agent.mqtt.errors import PayloadInvalid
from agent.mqtt.throttle import Throttle
from agent.mqtt.topics import TopicError, Topics, fleet_filters
from agent.mqtt.validation import load_schema, schema_for_topic, schema_names, validate
from agent.store.outbox import OutboxEvent, OutboxStats

from .helpers import fault_payload, health_sample, ledger_payload, progress_values, rec_state


def test_throttle_coalesces_and_keeps_latest() -> None:
    t: Throttle[str, int] = Throttle(1.0)
    assert t.offer("a", 1, now=0.0) == 1
    assert t.offer("a", 2, now=0.3) is None
    assert t.offer("a", 3, now=0.6) is None
    assert t.offer("b", 9, now=0.6) == 9  # keys are independent
    assert t.next_due() == 1.0
    assert t.take_due(0.9) == []
    assert t.take_due(1.0) == [("a", 3)]
    assert t.next_due() is None
    assert t.offer("a", 4, now=1.5) is None
    assert t.flush("a") == 4 and t.flush("a") is None
    assert t.offer("a", 5, now=1.6) == 5  # forgotten key starts afresh


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(1.0, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(10)]
    assert all(1.0 <= d <= 8.0 for d in delays)
    ceilings = [min(8.0, 2.0**i) for i in range(10)]
    assert all(d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) > 5  # jittered
    b.reset()
    assert b.next_delay() == 1.0


def test_topics_and_levels() -> None:
    t = Topics("dock/v1", "dock-A")
    assert t.status == "dock/v1/dock-A/status"
    assert t.recorder_state("R1") == "dock/v1/dock-A/recorder/R1/state"
    assert t.event("custody") == "dock/v1/dock-A/events/custody"
    assert t.command_filter == "dock/v1/dock-A/cmd/+"
    for bad in ("a/b", "+", "#", ""):
        with pytest.raises(TopicError):
            t.recorder_state(bad)
    with pytest.raises(TopicError):
        Topics("dock/v1", "dock/A")
    assert "dock/v1/+/status" in fleet_filters("dock/v1")


def test_all_schemas_are_valid_json_schemas() -> None:
    names = schema_names()
    assert {"status", "health", "recorder-state", "reply", "event-custody"} <= set(names)
    for name in names:
        Draft202012Validator.check_schema(load_schema(name))


def test_builders_match_schemas() -> None:
    now = 1_795_000_000.25
    validate("status", payloads.status_online("dock-A", 3, now, "1.0", "5"))
    validate("status", payloads.status_offline("dock-A", 3, "connection-lost", None))
    health: dict[str, Any] = payloads.health(
        "dock-A", 3, now, "1.0", health_sample(unknown_field=1), OutboxStats(5, now - 10, 2),
        {"published": 1})
    validate("health", health)
    assert "unknown_field" not in health["health"]  # only documented fields go out
    validate("event-health", payloads.event("dock-A", OutboxEvent(
        8, "e8", "health", None, payloads.health_event(now, health_sample(), OutboxStats(
            0, None, 0)), True, now)))
    validate("recorder-state", payloads.recorder_birth("dock-A", "R1", 3, now, rec_state(
        "1", percent=88.5, verdict="NOT_READY", reasons=[("battery_low", "battery 88%")])))
    validate("recorder-state", payloads.recorder_birth("dock-A", "R1", 3, now, rec_state(),
                                                       stale=True))
    validate("recorder-state", payloads.recorder_death("dock-A", "R1", 3, now))
    ev = OutboxEvent(7, "e7", "custody", "R1", ledger_payload(1), False, now)
    body = payloads.event("dock-A", ev)
    validate("event-custody", body)
    assert body["created_at"] == "2026-11-18T11:06:40.250Z"
    validate("event-fault", payloads.event("dock-A", OutboxEvent(
        9, "e9", "fault", "R1", fault_payload(2, 1, "timeout", "no answer"), False, now)))
    validate("recorder-progress", payloads.progress("dock-A", "R1", now, progress_values(1, 2)))
    validate("recorder-progress", payloads.progress(
        "dock-A", "R1", now, progress_values(2, 2), RESULT))
    validate("reply", payloads.reply_ok("dock-A", "c1", "rebirth", {"republished": True}, now))
    validate("reply", payloads.reply_error("dock-A", None, "verify", "malformed", "x", now))
    assert json.loads(payloads.encode({"b": 1, "a": 2})) == {"a": 2, "b": 1}


RESULT = {"outcome": "complete", "detail": "", "stored": 2, "already_stored": 0, "failed": 0,
          "refused": 0, "wiped": 2, "wipe_failed": 0, "late": 0, "changed": 0,
          "bytes_copied": 2048, "resumed_bytes": 0}


def test_schemas_reject_bad_payloads() -> None:
    now = 1_795_000_000.0
    with pytest.raises(PayloadInvalid, match="bdSeq"):
        validate("status", {"dock_id": "d", "state": "online"})
    with pytest.raises(PayloadInvalid):  # a death carries nothing but the death
        validate("recorder-state", {**payloads.recorder_death("d", "R1", 1, now), "bay": "1"})
    with pytest.raises(PayloadInvalid):
        validate("reply", {**payloads.reply_ok("d", "c", "v", {}, now), "ok": False})
    with pytest.raises(PayloadInvalid):
        validate("recorder-state", payloads.recorder_birth(
            "d", "R1", 1, now, rec_state(battery={"percent": 120, "charging": False})))
    with pytest.raises(PayloadInvalid):  # strict: no undocumented field anywhere
        validate("recorder-state", payloads.recorder_birth("d", "R1", 1, now,
                                                           rec_state(docked_at=1.5)))
    with pytest.raises(PayloadInvalid):
        validate("recorder-state", payloads.recorder_birth("d", "R1", 1, now,
                                                           rec_state(surprise=1)))
    with pytest.raises(PayloadInvalid):  # kinds and fault codes are closed sets
        validate("event-custody", payloads.event("d", OutboxEvent(
            7, "e7", "custody", "R1", ledger_payload(1, kind="check-in"), False, now)))
    with pytest.raises(PayloadInvalid):
        validate("event-fault", payloads.event("d", OutboxEvent(
            7, "e7", "fault", "R1", fault_payload(1, 1, "battery-failing", "x"), False, now)))
    with pytest.raises(PayloadInvalid):  # times are RFC 3339 with an offset
        validate("status", {**payloads.status_online("d", 1, now, "1", "5"),
                            "time": "2026-11-23T08:00:00"})


def test_schema_for_topic() -> None:
    assert schema_for_topic(["recorder", "R1", "state"]) == "recorder-state"
    assert schema_for_topic(["events", "fault"]) == "event-fault"
    assert schema_for_topic(["cmd", "verify"]) == "command-verify"
    assert schema_for_topic(["nope"]) is None


def test_identity_fields() -> None:
    from agent.domain import RecorderIdentity

    now = 1_795_000_000.0
    ident = RecorderIdentity("REC00001", model="BW", firmware="2.4", officer_no="0042",
                             officer_name="Li")
    state: dict[str, Any] = payloads.identity_fields(ident)
    assert state["officer"]["officer_no"] == "0042"
    validate("recorder-state", payloads.recorder_birth("dock-A", "REC00001", 1, now,
                                                       rec_state(**state)))
    bare: dict[str, Any] = payloads.identity_fields(RecorderIdentity("REC00002"))
    assert bare["officer"] is None
    validate("recorder-state", payloads.recorder_birth("dock-A", "REC00002", 1, now,
                                                       rec_state(**bare)))
