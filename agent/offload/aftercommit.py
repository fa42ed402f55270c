"""After a file's custody record is committed: verify it (by the verify mode), report it,
and maybe wipe it on the recorder - in order, one file at a time, while the next file
copies (bounded: at most one committed file waits)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from agent.domain import DockingContext
from agent.offload.items import Claims, Committed
from agent.offload.policy import Wiper
from agent.offload.problems import ProblemLog
from agent.offload.summary import OffloadSummary, StoredFile
from agent.offload.wipes import Wipes
from agent.offload.workers import Plant


def sampled(digest: bytes, rate: float) -> bool:
    """Deterministic sampling from the file's own hash (unpredictable before the copy)."""
    return int.from_bytes(digest[:8], "big") < rate * 2**64


@dataclass(frozen=True, slots=True)
class Run:
    """One offload's context for the steps after each commit."""

    ctx: DockingContext
    summary: OffloadSummary
    wiper: Wiper | None
    stop: threading.Event
    claims: Claims  # deletes answered "deleted", confirmed at the end
    problems: ProblemLog  # how problems are added to the summary's lists


class AfterCommit:
    def __init__(self, plant: Plant, wipes: Wipes, run: Run) -> None:
        self._plant, self._wipes, self._run = plant, wipes, run
        self._queue: asyncio.Queue[Committed | None] = asyncio.Queue(maxsize=1)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while (c := await self._queue.get()) is not None:
            await self._handle(c)

    async def put(self, c: Committed | None) -> None:
        putter = asyncio.ensure_future(self._queue.put(c))
        try:
            done, _ = await asyncio.wait({putter, self._task},
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            putter.cancel()
            raise
        if putter not in done:  # the worker died: surface its error
            putter.cancel()
            self._task.result()

    async def finish(self) -> None:
        await self.put(None)
        await self._task

    async def abort(self) -> None:
        """Stop the steps after commit while the offload unwinds with its own exception.

        The task's own end (a verify that saw the stop flag the unwinding set raises
        CopyStopped) must not replace that exception: an agent stop would otherwise turn
        into a failed offload. A cancellation of the caller still propagates."""
        self._task.cancel()
        await asyncio.wait({self._task})
        if not self._task.cancelled():
            self._task.exception()  # retrieved: the unwinding exception is what counts

    async def _verify(self, c: Committed) -> bool | None:
        mode, run, r = self._plant.settings.verify, self._run, c.result
        if not (mode == "always" or (mode == "first-docking" and run.ctx.first_docking)
                or (mode == "sampled"
                    and sampled(r.digest, self._plant.settings.verify_sample_rate))):
            return None
        return await self._wipes.verify_file(c.file_id, c.final, r.size, r.digest, run.stop)

    async def _handle(self, c: Committed) -> None:
        """Verify, then maybe wipe, one committed file (overlaps the next file's copy)."""
        r, run = c.result, self._run
        verified = await self._verify(c)
        prev = c.item.replaced(r)
        changed = r.changed
        if changed is None and prev is not None:
            changed = f"content differs from the copy stored earlier (file {prev.id})"
        name = c.item.file.relpath
        officer = run.ctx.identity_for(name).officer_no  # who it is filed under
        run.summary.add_stored(StoredFile(
            name, c.journal.stored_relpath, r.size, r.digest.hex(), r.resumed_from, c.late,
            changed, c.item.times.source, verified,
        ), other_officer=officer if officer != run.ctx.identity.officer_no else None)
        if (run.wiper is not None and self._plant.settings.wipe_after_offload
                and run.summary.outcome == "complete" and changed is None):
            if verified is None:  # not verified under the verify mode: a wipe still needs it
                verified = await self._wipes.verify_file(c.file_id, c.final, r.size, r.digest,
                                                         run.stop)
            if verified:
                await self._wipes.wipe(run.wiper, run.ctx.identity.serial, c.file_id,
                                       c.item.file.relpath, r.size, r.digest, run.problems,
                                       run.claims)
