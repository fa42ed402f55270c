"""The runner executes the machine's plan: an optional step unit (the slot the firmware
update takes) runs in a real docking exactly where the plan puts it - after the offload
was complete and verified and the recorder released - and never otherwise."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import pytest

from agent.session.context import SessionContext
from agent.session.state_machine import State, Step
from hw_sim.spec import Faults

from .session_bench import Bench, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)


class RecordingUnit:
    """Stands in for the firmware updater: notes what it found when it ran."""

    def __init__(self) -> None:
        self.ran = asyncio.Event()
        self.seen: list[tuple[State, str | None, bool, list[Step]]] = []

    async def run(self, ctx: SessionContext) -> None:
        result = ctx.facts.offload_result
        self.seen.append((ctx.state, result.outcome if result else None, ctx.res.unlocked,
                          list(ctx.machine.completed_steps)))
        self.ran.set()


async def test_optional_step_runs_after_a_verified_offload_and_release(
        make_bench: Any) -> None:
    unit = RecordingUnit()
    bench: Bench = await make_bench(optional_units={Step.FIRMWARE_UPDATE: unit})
    rec = await bench.plug("B1", spec("SN000301"))
    s = bench.session("SN000301")
    await asyncio.wait_for(unit.ran.wait(), 60)
    ((state, outcome, unlocked, before),) = unit.seen
    assert state is State.RELEASED and outcome == "complete" and unlocked is False
    assert before == [Step.LINK, Step.IDENTIFY, Step.CLOCK, Step.STATUS, Step.OFFLOAD,
                      Step.RELEASE]
    assert rec.firmware.state.mass_storage is False  # storage locked before it ran
    assert s.machine.next_step() is Step.BATTERY_POLL  # then the session charges on


async def test_without_the_unit_the_plan_has_no_such_step(bench: Bench) -> None:
    await bench.plug("B1", spec("SN000302"))
    s = bench.session("SN000302")
    await wait_state(s, *ENDED)
    assert Step.FIRMWARE_UPDATE not in s.machine.plan


async def test_optional_step_never_runs_when_the_offload_failed(
        make_bench: Any, env: Any) -> None:
    env.configure_offload(reserve_mib=1 << 40)  # the evidence store is "full"
    unit = RecordingUnit()
    bench: Bench = await make_bench(optional_units={Step.FIRMWARE_UPDATE: unit})
    await bench.plug("B1", spec("SN000303"))
    s = bench.session("SN000303")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED and s.offload_result is not None
    assert s.offload_result.outcome == "storage_full"
    assert s.machine.next_step() is None and unit.seen == []


@pytest.mark.skipif(not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")),
                    reason="needs FUSE (/dev/fuse)")
async def test_optional_step_skipped_when_files_were_left_on_the_recorder(
        make_bench: Any, env: Any) -> None:
    env.configure_offload(wipe_after_offload=True, read_retries=0)
    unit = RecordingUnit()
    bench: Bench = await make_bench(optional_units={Step.FIRMWARE_UPDATE: unit})
    await bench.plug("B1", spec("SN000304", faults=Faults(eio_at=((1, 4096),))))
    s = bench.session("SN000304")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED and s.offload_result is not None
    assert s.offload_result.failed == 1
    while s.machine.next_step() is not Step.BATTERY_POLL:  # past the skipped slot
        await asyncio.sleep(0.01)
    assert unit.seen == []
