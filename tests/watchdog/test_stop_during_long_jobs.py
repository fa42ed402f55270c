"""A clean stop during a long worker-thread job ends promptly through the real agent: the
job sees the stop at its next chunk, the loop and the interpreter wait for no thread, and
the agent exits 0 without its stop watchdog having to step in. What the job leaves is
consistent: a fixity audit slice paced far below disk speed (minutes for one file)
records nothing and runs again after the restart; an export paced the same way is
recorded failed, its partial package removed from the target."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.e2e.harness import Rig, stop_rigs, until
from tests.openfiles import holds_open

SERIAL = "BWC47001"
OFFICER = OfficerRecord("3001001", "Sun Li", "U03", "Unit 3")
# 8 MiB at 0.1 MiB/s: 80 s for the one file, longer than the agent's own stop limit
SLOW = {"interval_s": 1.0, "cycle_days": 0.001, "max_mib_per_s": 0.1}


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rig = Rig(tmp_path / "dock", "dock-stop", None, **kw)
        rigs.append(rig)
        return rig

    yield make
    await stop_rigs(rigs)



def audit_runs(rig: Rig) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "audit_run"]


async def test_a_stop_during_a_long_audit_slice_is_prompt_and_records_nothing(
        make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(extra={"audit": SLOW})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", RecorderSpec(SERIAL, battery_percent=95, footage=FootageSpec(
        count=1, size_bytes=8 * MIB, seed=47)))
    await rig.wait_released(SERIAL)
    (stored,) = rig.stored(SERIAL)
    path = rig.store_dir / stored.relpath
    proc = rig.agent.proc
    assert proc is not None
    await until(lambda: holds_open(path, proc.pid), "the audit slice reading the stored file",
                agent=rig.agent)
    assert audit_runs(rig) == []

    # the rig fails a stop the agent's watchdog had to end (its stack dump in the log)
    assert rig.agent.terminate() == 0
    assert "long job(s) did not stop" not in rig.agent.log_text()
    assert audit_runs(rig) == []  # the stopped slice recorded nothing
    assert not rig.query("SELECT 1 FROM faults WHERE code = 'store_integrity'")

    # after a restart (at disk speed) the same file is audited and found intact
    rig.extra["audit"] = {**SLOW, "max_mib_per_s": 1000.0}
    rig.write_config()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.wait_ledger(lambda rows: any(r["kind"] == "audit_run" for r in rows),
                          "the slice run again after the restart")
    (run,) = audit_runs(rig)[:1]
    assert run["files_checked"] == 1 and run["problems"] == [], run
    assert not rig.query("SELECT 1 FROM faults WHERE code = 'store_integrity'")
    assert rig.agent.terminate() == 0


async def test_a_stop_during_a_long_export_records_it_failed_and_removes_the_partial(
        make_rig: Callable[..., Rig], tmp_path: Path) -> None:
    rig = make_rig(extra={"audit": {"enabled": False}, "access": {
        "approvers": {"U03": ["insp.wang"]}, "export_max_mib_per_s": 0.1}})
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", RecorderSpec(SERIAL, battery_percent=95, officer=OFFICER,
                                     footage=FootageSpec(count=1, size_bytes=8 * MIB, seed=48)))
    await rig.wait_released(SERIAL)
    usb = tmp_path / "usb"
    usb.mkdir()
    export = asyncio.create_task(rig.dockctl(
        "export", "--requester", "det.liu", "--purpose", "case 2026-118 court bundle",
        "--recorder", SERIAL, "--approver", "insp.wang", "--target", str(usb)))
    await until(lambda: any(p.is_file() for p in usb.rglob("*")), "export writing",
                agent=rig.agent)

    assert rig.agent.terminate() == 0
    await export
    assert "long job(s) did not stop" not in rig.agent.log_text()
    kinds = [r["kind"] for r in rig.ledger()]
    assert "exported" not in kinds
    states = [r["state"] for r in rig.query("SELECT state FROM exports")]
    if states == ["started"]:  # the stop came before it could record the failure: the
        rig.start_agent()      # restart does (as after a power cut)
        await rig.wait_agent_up()
        await until(lambda: [r["state"] for r in rig.query("SELECT state FROM exports")]
                    == ["failed"], "the stopped export recorded failed", agent=rig.agent)
        assert rig.agent.terminate() == 0
    else:
        assert states == ["failed"], states
    failed = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "export_failed"]
    assert len(failed) == 1 and failed[0]["partial_removed"] is True, failed
    assert list(usb.iterdir()) == []
