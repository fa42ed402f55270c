"""Typed session state, pure: a snapshot becomes readiness facts, the retained MQTT state
(schema `recorder-state`) and dockctl's record without any dictionary parsing."""

from __future__ import annotations

import json

from agent.compliance.readiness import Verdict, evaluate
from agent.docking_state import (
    STORAGE_ONLY_UNCHECKED,
    BatteryFacts,
    ClockFacts,
    ClockSet,
    FaultNote,
    OffloadProgressFacts,
    OffloadResult,
    SessionSnapshot,
    StorageFacts,
)
from agent.dockview import RecorderView, facts_from_snapshot, status_document
from agent.domain import RecorderIdentity
from agent.mqtt import payloads
from agent.mqtt.validation import validate
from agent.settings import ReadinessSettings

T0 = 1_800_000_000.0
IDENT = RecorderIdentity("SN1", "DSJ-1", "B", "2.0.1", "0042", "Li Wei", "U7", "Patrol 7")
RESULT = OffloadResult("complete", "", stored=2, already_stored=0, failed=0, refused=0,
                       wiped=2, wipe_failed=0, late=0, changed=0, bytes_copied=10,
                       resumed_bytes=0)


def snapshot(**kw: object) -> SessionSnapshot:
    base: dict[str, object] = dict(
        bay="B1", key="SN1", session_id="s1", identity=IDENT, storage_only=False,
        state="released", state_since=T0 + 60, docked_at=T0,
        battery=BatteryFacts(95, 4100, True, 30.0, 12, 97), battery_at=T0 + 30,
        battery_samples=((T0, 90.0, True), (T0 + 30, 95.0, True)),
        storage=StorageFacts(64_000_000_000, 60_000_000_000, 0, False),
        clock=ClockFacts(1500, 4.25, 3, 1000, True, "set",
                         ClockSet(drift_after_ms=3, rtt_after_ms=4.0, ok=True)),
        offload_result=RESULT)
    base.update(kw)
    return SessionSnapshot(**base)  # type: ignore[arg-type]


def test_readiness_reads_the_typed_facts() -> None:
    facts = facts_from_snapshot(snapshot())
    assert facts.battery_percent == 95.0 and facts.charging
    assert facts.clock_drift_ms == 3.0  # after the set, not before
    assert facts.offload_complete and facts.files_pending == 0
    assert evaluate(facts, ReadinessSettings(min_free_gb=1.0), 1000).verdict is Verdict.READY


def test_failed_files_keep_the_offload_pending() -> None:
    snap = snapshot(offload_result=OffloadResult("complete", stored=1, failed=1))
    facts = facts_from_snapshot(snap)
    assert not facts.offload_complete and facts.files_pending == 1


def test_self_judged_faults_are_not_repeated() -> None:
    snap = snapshot(faults=(FaultNote("officer_unassigned", "x", "warning"),
                            FaultNote("clock_not_set", "y", "error")))
    assert list(facts_from_snapshot(snap).open_faults) == ["clock_not_set"]


def test_retained_state_matches_its_schema() -> None:
    snap = snapshot(offload=OffloadProgressFacts(2, 2, 10, 10, 0.0, 0.0, None))
    readiness = evaluate(facts_from_snapshot(snap), ReadinessSettings(min_free_gb=1.0), 1000)
    state = payloads.recorder_state(snap, readiness)
    assert state["clock"] == {"drift_ms": 3, "corrected": True, "action": "set",
                              "dock_synchronised": True, "tolerance_ms": 1000}
    assert state["battery"] == {**snap.battery.as_record(),  # type: ignore[union-attr]
                                "at": payloads.iso(T0 + 30)}
    state.pop("offload")
    validate("recorder-state", payloads.recorder_birth("dock-A", "SN1", 1, T0, state))


def test_unknown_facts_are_left_out_not_null() -> None:
    snap = snapshot(identity=RecorderIdentity("SN1"), battery=None, battery_at=None,
                    storage=None, clock=None, offload_result=None, storage_only=True,
                    state="mounted", unchecked=STORAGE_ONLY_UNCHECKED)
    readiness = evaluate(facts_from_snapshot(snap), ReadinessSettings(), 1000)
    state = payloads.recorder_state(snap, readiness)
    assert not {"battery", "storage", "clock", "offload", "offload_result"} & set(state)
    assert state["officer"] is None and state["unchecked"] == ["officer", "clock", "battery"]
    validate("recorder-state", payloads.recorder_birth("dock-A", "SN1", 1, T0, state))


def test_a_result_known_only_as_interrupted_carries_no_counters() -> None:
    left = OffloadResult.left_early()
    assert left.as_record() == {"outcome": "interrupted", "detail": left.detail}
    assert left.as_progress().files_total == 0 and left.files_pending == 0
    assert RESULT.as_progress().files_done == 2 and RESULT.as_progress().bytes_done == 10


def test_dockctl_status_is_json_with_rfc3339_times() -> None:
    snap = snapshot()
    view = RecorderView(snap, evaluate(facts_from_snapshot(snap), ReadinessSettings(), 1000))
    doc = status_document([view], dock_id="dock-A", version="1", broker_connected=None,
                          outbox_depth=None, store_free_bytes=5)
    bays = doc["bays"]
    assert isinstance(bays, list) and len(bays) == 1
    bay = bays[0]
    assert isinstance(bay, dict)
    assert bay["docked_at"] == payloads.iso(T0) and bay["battery_percent"] == 95
    assert "battery_samples" not in bay and bay["readiness"]["verdict"] in ("READY",
                                                                             "NOT_READY")
    assert json.loads(json.dumps(doc)) == doc
