"""The offloader's worker threads and what every part of an offload shares."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from agent.offload.buffers import BufferPool
from agent.offload.bulkthreads import lower_priority
from agent.offload.policy import DeadlinePolicy
from agent.settings import OffloadSettings
from agent.store.db import Database
from agent.store.ledger import Ledger

T = TypeVar("T")


class Workers:
    """Blocking work (copies, hashing, directory operations) off the event loop, in
    threads at the bulk priority (`agent.offload.bulkthreads`)."""

    def __init__(self, max_workers: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers,
                                            thread_name_prefix="offload",
                                            initializer=lower_priority)

    async def call(
        self, fn: Callable[..., T], *args: object, stop: threading.Event | None = None
    ) -> T:
        """Run `fn` in a worker thread. With `stop`, a cancellation sets it and waits for
        the thread to finish (copy threads notice it within one chunk) before propagating,
        so no thread keeps writing after the task is gone."""
        cf: Future[T] = self._executor.submit(fn, *args)
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            if stop is not None:
                stop.set()
                while not cf.done():
                    try:
                        await asyncio.shield(asyncio.wrap_future(cf))
                    except asyncio.CancelledError:
                        continue
                    except BaseException:  # the outcome no longer matters
                        break
            raise

    async def shutdown(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


@dataclass(frozen=True, slots=True)
class Plant:
    """What every part of the offloader works with (one per Offloader)."""

    db: Database
    ledger: Ledger
    store: Path
    settings: OffloadSettings
    deadline: DeadlinePolicy
    tz: ZoneInfo
    pool: BufferPool
    workers: Workers
