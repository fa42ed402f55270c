"""A stop while a committed file is being verified: the offload unwinds with its own
exception (the cancellation of an agent stop), never with the verify's CopyStopped, so an
agent stop is not recorded as a failed offload."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.offload.aftercommit import AfterCommit, Run
from agent.offload.errors import CopyStopped
from agent.offload.items import Claims
from agent.offload.summary import OffloadSummary


class _StoppedVerify:
    """A verify that sees the stop flag the unwinding offload has just set."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def verify_file(self, *args: object) -> bool:
        self.started.set()
        raise CopyStopped("stopped")


def _committed() -> Any:
    result = SimpleNamespace(size=3, digest=b"\x00" * 32, changed=None, resumed_from=0)
    return SimpleNamespace(result=result, file_id=1, final=Path("/nonexistent"), late=False,
                           item=SimpleNamespace(file=SimpleNamespace(relpath=b"a.MP4")))


async def test_an_abort_after_the_verify_saw_the_stop_keeps_the_offload_s_exception() -> None:
    plant: Any = SimpleNamespace(settings=SimpleNamespace(
        verify="always", verify_sample_rate=1.0, wipe_after_offload=False))
    run = Run(cast(Any, SimpleNamespace(first_docking=True)), OffloadSummary("complete"),
              None, threading.Event(), Claims(), cast(Any, None))
    verify = _StoppedVerify()
    after = AfterCommit(plant, cast(Any, verify), run)
    await after.put(_committed())
    await verify.started.wait()

    async def offload() -> None:
        try:
            await asyncio.Event().wait()  # the copy of the next file, when the stop comes
        except BaseException:
            await after.abort()
            raise

    task = asyncio.create_task(offload())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not CopyStopped: a stop, not a failure
        await task
    assert run.summary.outcome == "complete"  # nothing recorded for the unfinished verify


async def test_an_abort_with_nothing_running_ends_quietly() -> None:
    plant: Any = SimpleNamespace(settings=SimpleNamespace(
        verify="off", verify_sample_rate=1.0, wipe_after_offload=False))
    run = Run(cast(Any, SimpleNamespace(first_docking=True)), OffloadSummary("complete"),
              None, threading.Event(), Claims(), cast(Any, None))
    after = AfterCommit(plant, cast(Any, _StoppedVerify()), run)
    await after.abort()
    await after.abort()  # twice: nothing left to stop
