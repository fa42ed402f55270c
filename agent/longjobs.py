"""The agent's long worker-thread jobs, and how a stop ends them.

A job that may run for minutes (the ledger check at start, a deep verify, a fixity audit
slice, an export's paced copy) must not run in asyncio's default executor: `asyncio.run`
waits for that executor's threads without limit when the loop closes, and the
interpreter joins them again at exit, so a stop arriving mid-job would wait for the whole
job. `LongJobs` runs them on threads of its own and hands each a `StopSignal`; a job
checks it between units of work (`check`) and sleeps on it (`wait`), so a stop ends it
within one unit. A job that stops raises `JobStopped` and records nothing: what it would
have recorded is done again by the next run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobStopped(Exception):
    """A long job gave up because the agent is stopping."""


class StopSignal(Protocol):
    """What a job sees of the stop: polled between units, and slept on."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def check(stop: StopSignal | None) -> None:
    """Between two units of work: JobStopped once a stop was asked for."""
    if stop is not None and stop.is_set():
        raise JobStopped("the agent is stopping")


def pause(stop: StopSignal | None, seconds: float) -> None:
    """Sleep a job's thread (pacing, yielding), woken at once by a stop (JobStopped)."""
    if seconds <= 0:
        check(stop)
    elif stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise JobStopped("the agent is stopping")


class LongJobs:
    """Worker threads for long jobs, whose end the agent controls (see the module doc)."""

    def __init__(self, workers: int = 4) -> None:
        self._stop = threading.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="long-job")
        self._running: set[concurrent.futures.Future[Any]] = set()  # jobs of any type

    @property
    def stop_signal(self) -> StopSignal:
        return self._stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self, job: Callable[[StopSignal], T]) -> T:
        """`job(stop)` on a worker thread; JobStopped if the agent is (or gets) stopping."""
        check(self._stop)
        future = self._executor.submit(job, self._stop)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        return await asyncio.wrap_future(future)

    def request_stop(self) -> None:
        """Tell every job to end at its next check; start no new one."""
        self._stop.set()

    async def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop every job and wait (at most `timeout_s`) until their threads are free;
        False if one did not end in time (it is named in the log)."""
        self.request_stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        running = [asyncio.wrap_future(f) for f in list(self._running)]
        if running:
            done, pending = await asyncio.wait(running, timeout=timeout_s)
            for f in done:  # the job's caller sees its outcome; this copy was only waited on
                if not f.cancelled():
                    f.exception()
            if pending:
                log.error("%d long job(s) did not stop within %.0f s", len(pending), timeout_s)
                return False
        return True
