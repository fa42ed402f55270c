"""Every fault the dock can know is raised through the real docking path (virtual recorders
on ptys, real SQLite): the recorder's own event log becomes field fault records exactly
once, with the officer and time they happened; firmware off the allowlist, no officer, and
late offloads are faults; battery samples outlive the docking."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

from agent.compliance.readiness import Verdict, evaluate
from agent.dockview import facts_from_snapshot
from agent.session.state_machine import State
from agent.settings import ReadinessSettings
from agent.store import assignments, recorder_history
from agent.store.faults import Fault
from firmware_bridge.messages import LogKind
from hw_sim.spec import Faults, FootageSpec

from .session_bench import SMALL, Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)
FIELD = (
    (LogKind.LOW_BATTERY, "battery 9%", 9000.0),
    (LogKind.OFFICER_ASSIGNED, "0042", 7200.0),
    (LogKind.STORAGE_FULL, "", 3600.0),
    (LogKind.HARDWARE_FAULT, "RTC write failed", 1800.0),
    (LogKind.AUTH_FAILURE, "wrong proof", 600.0),
    (LogKind.RECORDING_START, "x.mp4", 500.0),  # not a fault
)


def field_faults(env: Env, serial: str) -> list[Fault]:
    return [f for f in env.faults(recorder=serial)
            if f.detail.get("source") == "recorder_event_log"]


async def test_recorder_event_log_becomes_field_fault_records_once(
        env: Env, bench: Bench) -> None:
    # A recorder whose clock will not set: the dock's own fault, logged by the recorder
    # too ("RTC write failed") while docked; that entry must not become a field fault.
    s_spec = spec("SN000201", field_log=FIELD, clock_offset_s=30.0,
                  faults=Faults(clock_set="error"))
    before = time.time()
    await bench.plug("B1", s_spec)
    s = bench.session("SN000201")
    await wait_state(s, *ENDED)
    got = field_faults(env, "SN000201")
    assert [f.code for f in got] == ["battery_low", "storage_low", "hardware_fault",
                                     "auth_refused"]
    # who held it: unknown before the logged assignment, then the assigned officer
    assert [f.officer for f in got] == [None, "0042", "0042", "0042"]
    for f, (_, _, ago) in zip(got, [FIELD[0], *FIELD[2:5]], strict=True):
        # dated when it happened (recorder clock corrected by the drift measured now)
        assert abs(f.opened_us / 1e6 - (before - ago)) < 60, (f.code, f.opened_us)
        assert f.detail["time_known"] is True and f.detail["clock_drift_ms"] is not None
        assert abs(f.detail["clock_drift_ms"] - 30000) < 2000
        assert f.cleared_us is not None and f.bay == "B1" and f.session_id == s.session_id
    assert "battery 9%" in got[0].reason
    # the work record is in the custody ledger: a fault and its clearing per entry
    kinds = [e.kind for e in env.entries(session_id=s.session_id)
             if e.kind in ("fault", "fault_cleared")
             and (e.data.get("detail") or {}).get("source") == "recorder_event_log"]
    assert kinds.count("fault") == 4
    # a field event does not make the recorder unfit now: not in the session's open faults
    assert "battery_low" not in [f.code for f in s.faults]
    cursor = env.query(lambda c: recorder_history.event_cursor(c, "SN000201"))
    assert cursor is not None and cursor.officer == "0042" and cursor.last_entry
    await bench.unplug("B1")

    # The next docking reads only what is new: nothing is recorded twice, and the clock
    # fault the recorder logged while it sat in this dock is not a field fault.
    await bench.plug("B1", s_spec)
    s2 = bench.session("SN000201")
    await wait_state(s2, *ENDED)
    assert s2.session_id != s.session_id
    assert len(field_faults(env, "SN000201")) == 4
    cursor2 = env.query(lambda c: recorder_history.event_cursor(c, "SN000201"))
    assert cursor2 is not None and cursor2.next_index > cursor.next_index
    (clock,) = env.faults(recorder="SN000201", code="clock_not_set")  # the dock's own
    assert clock.repeat_count == 1 and clock.cleared_us is None


async def test_event_log_read_is_durable_across_a_new_agent(env: Env, make_bench: Any) -> None:
    b1: Bench = await make_bench()
    await b1.plug("B1", spec("SN000202", field_log=FIELD[:1]))
    await wait_state(b1.session("SN000202"), *ENDED)
    await b1.unplug("B1")
    assert len(field_faults(env, "SN000202")) == 1
    b2: Bench = await make_bench()  # another supervisor on the same database
    b2.workdir = b1.workdir  # the same recorder, its log kept
    await b2.plug("B1", spec("SN000202", field_log=FIELD[:1]))
    await wait_state(b2.session("SN000202"), *ENDED)
    assert len(field_faults(env, "SN000202")) == 1


def open_codes(env: Env, serial: str) -> list[str]:
    return [f.code for f in env.faults(recorder=serial, include_cleared=False)]


async def test_firmware_not_on_the_model_allowlist_is_a_fault_until_updated(
        env: Env, make_bench: Any) -> None:
    policy = ReadinessSettings(firmware_allowlist={"DSJ-SIM1": ["2.0.0", "2.0.1"]})
    bench: Bench = await make_bench(readiness=policy)
    await bench.plug("B1", spec("SN000203", firmware="1.0.0"))
    s = bench.session("SN000203")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED  # the footage still comes off
    assert open_codes(env, "SN000203") == ["firmware_not_allowed"]
    (f,) = env.faults(recorder="SN000203", code="firmware_not_allowed")
    assert f.severity == "warning" and f.detail == {"model": "DSJ-SIM1", "firmware": "1.0.0"}
    assert "allowlist" in f.reason
    snap = bench.supervisor.snapshot()[0]
    r = evaluate(facts_from_snapshot(snap), policy, 1000)
    assert [x.code for x in r.reasons] == ["firmware_not_allowed"]  # once, not twice
    await bench.unplug("B1")
    await bench.plug("B1", spec("SN000203", firmware="2.0.1"))
    await wait_state(bench.session("SN000203"), *ENDED)
    assert open_codes(env, "SN000203") == []
    (f,) = env.faults(recorder="SN000203", code="firmware_not_allowed")
    assert f.cleared_reason == "firmware allowed"


async def test_officer_unassigned_is_a_fault_until_an_officer_is_assigned(
        env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000204", officer=None))
    s = bench.session("SN000204")
    await wait_state(s, *ENDED)
    assert open_codes(env, "SN000204") == ["officer_unassigned"]
    assert [f.code for f in s.faults] == ["officer_unassigned"]
    env.db.write_sync(lambda c: assignments.request(c, "SN000204", officer_no="0101"))
    assert await s.apply_pending_assignment() is True
    assert rec.firmware.state.officer.officer_no == "0101"
    assert open_codes(env, "SN000204") == []
    assert s.faults == []
    (f,) = env.faults(recorder="SN000204", code="officer_unassigned")
    assert f.cleared_reason == "officer assigned"


async def test_footage_stored_after_its_deadline_is_a_late_offload_record(
        env: Env, bench: Bench) -> None:
    old = int((time.time() - 3 * 86400) * 1000)  # recorded three days ago, deadline 24 h
    await bench.plug("B1", spec("SN000205", footage=replace(SMALL, start_ms=old)))
    s = bench.session("SN000205")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED
    (f,) = env.faults(recorder="SN000205", code="late_offload")
    assert f.officer == "0042" and f.severity == "warning" and f.cleared_us is not None
    assert len(f.detail["files"]) == 2 and "2 files" in f.reason
    assert "late_offload" not in [x.code for x in s.faults]  # a record, not a condition


async def test_battery_history_outlives_the_docking_and_gives_an_eta_at_once(
        env: Env, make_bench: Any) -> None:
    fast = spec("SN000206", battery_percent=20, charge_percent_per_min=240.0,
                footage=FootageSpec(count=0))
    b1: Bench = await make_bench(battery_poll_s=0.2)
    await b1.plug("B1", fast)
    await wait_state(b1.session("SN000206"), *ENDED)

    def stored() -> list[recorder_history.BatteryRecord]:
        found: list[recorder_history.BatteryRecord] = env.query(
            lambda c: recorder_history.battery_history(c, "SN000206"))
        return found

    deadline = time.monotonic() + 60
    while len({r.percent for r in stored()}) < 3:
        assert time.monotonic() < deadline, stored()
        await asyncio.sleep(0.1)
    await b1.unplug("B1")
    first = stored()
    assert all(r.charging for r in first) and first[0].health_percent is not None

    # Docked again (no polling this time): the first reading already has an ETA, from the
    # history of this pack.
    b2: Bench = await make_bench(battery_poll_s=3600.0)
    b2.workdir = b1.workdir
    await b2.plug("B1", replace(fast, battery_percent=30))
    s = b2.session("SN000206")
    await wait_state(s, *ENDED)
    snap = b2.supervisor.snapshot()[0]
    samples = snap.battery_samples
    assert len(samples) >= 3 and samples[0][0] < s.docked_at  # from the earlier docking
    facts = facts_from_snapshot(snap)
    r = evaluate(facts, ReadinessSettings(min_battery_percent=90, min_free_gb=0.0), 1000)
    assert r.verdict is Verdict.CHARGING and r.eta_s is not None and r.eta_s > 0


def test_battery_history_retention_is_bounded(env: Env, monkeypatch: Any) -> None:
    monkeypatch.setattr(recorder_history, "MAX_SAMPLES", 5)
    t0 = 1_800_000_000_000_000
    for i in range(12):
        env.db.write_sync(lambda c: recorder_history.record_battery(  # runs at once
            c, "SN000207", {"percent": 10 + i, "charging": True}, time_us=t0 + i * 1_000_000,
            session_id=None))
    # unchanged readings within KEEP_EVERY_US are not stored again
    env.db.write_sync(lambda c: recorder_history.record_battery(
        c, "SN000207", {"percent": 21, "charging": True}, time_us=t0 + 20_000_000,
        session_id=None))
    rows = env.query(lambda c: recorder_history.battery_history(c, "SN000207"))
    assert [r.percent for r in rows] == [17, 18, 19, 20, 21]
    old = t0 + 20_000_000 + recorder_history.MAX_AGE_US + 1
    env.db.write_sync(lambda c: recorder_history.record_battery(
        c, "SN000207", {"percent": 50, "charging": False}, time_us=old, session_id=None))
    rows = env.query(lambda c: recorder_history.battery_history(c, "SN000207"))
    assert [r.percent for r in rows] == [50]


async def test_field_faults_name_who_held_it_not_an_assignment_made_at_docking(
        env: Env, bench: Bench) -> None:
    env.db.write_sync(lambda c: assignments.request(c, "SN000208", officer_no="0999"))
    await bench.plug("B1", spec("SN000208", field_log=((LogKind.LOW_BATTERY, "", 600.0),)))
    s = bench.session("SN000208")
    await wait_state(s, *ENDED)
    assert bench.supervisor.snapshot()[0].officer_no == "0999"
    (f,) = field_faults(env, "SN000208")
    assert f.code == "battery_low" and f.officer == "0042"


async def test_a_reset_event_log_is_noticed_and_read_again(env: Env, bench: Bench) -> None:
    """Indices are never reused: a log that no longer holds the entry read last time was
    reset or replaced. That is recorded, and the log is read again from the start."""
    s_spec = spec("SN000209", field_log=((LogKind.LOW_BATTERY, "first", 900.0),))
    rec = await bench.plug("B1", s_spec)
    await wait_state(bench.session("SN000209"), *ENDED)
    await bench.unplug("B1")
    assert [f.reason for f in field_faults(env, "SN000209")] == [
        "battery ran low in the field: first"]
    # the recorder comes back with a fresh log (factory reset) holding one new field event
    log_file = rec.storage.dir / "eventlog.jsonl"
    log_file.write_text(json.dumps({"index": 0, "time_ms": int((time.time() - 300) * 1000),
                                    "kind": int(LogKind.STORAGE_FULL), "detail": "new"}) + "\n")
    await bench.plug("B1", s_spec)
    s2 = bench.session("SN000209")
    await wait_state(s2, *ENDED)
    assert [f.code for f in field_faults(env, "SN000209")] == ["battery_low", "storage_low"]
    (reset,) = env.faults(recorder="SN000209", code="protocol_error")
    assert "does not continue" in reset.reason and reset.cleared_us is not None


async def test_a_flooding_event_log_is_read_in_bounded_chunks_and_summarised(
        env: Env, bench: Bench, monkeypatch: Any) -> None:
    from agent.session.steps import field_events

    monkeypatch.setattr(field_events, "EVENT_LOG_CHUNK", 100)
    monkeypatch.setattr(field_events, "EVENT_LOG_MAX", 300)
    flood = tuple((LogKind.LOW_BATTERY, f"#{i}", 7200.0 - i) for i in range(1000))
    s_spec = spec("SN000210", field_log=flood)
    await bench.plug("B1", s_spec)
    await wait_state(bench.session("SN000210"), *ENDED)
    got = field_faults(env, "SN000210")
    # about EVENT_LOG_MAX entries read this docking (whole pages): 50 one by one, the
    # others in one summary record
    assert len(got) == 51 and got[-1].detail["summarised"] > 200
    assert "more battery_low entries" in got[-1].reason
    cursor = env.query(lambda c: recorder_history.event_cursor(c, "SN000210"))
    assert cursor is not None and 300 <= cursor.next_index < 1000
    await bench.unplug("B1")
    # the following dockings read on from there, until every entry is recorded once
    for _ in range(3):
        await bench.plug("B1", s_spec)
        await wait_state(bench.session("SN000210"), *ENDED)
        await bench.unplug("B1")
    got = field_faults(env, "SN000210")
    assert sum(int(f.detail.get("summarised", 1)) for f in got) == 1000
