"""A clean stop during a long worker-thread job (here a fixity audit slice paced far below
disk speed: minutes for one file) ends promptly through the real agent: the job sees the
stop at its next chunk, the loop and the interpreter wait for no thread, the agent exits 0
without its stop watchdog having to step in, and the unfinished slice records nothing (no
`audit_run`, no fault); after a restart the slice is run again and recorded."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.e2e.harness import Rig, stop_rigs, until

SERIAL = "BWC47001"
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


def has_open(pid: int, path: Path) -> bool:
    """The process holds `path` open (the audit is reading it)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(fds / name) == str(path):
                return True
        except OSError:
            continue
    return False


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
    await until(lambda: has_open(proc.pid, path), "the audit slice reading the stored file",
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
