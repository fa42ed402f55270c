"""Liveness for systemd's watchdog: ping only while the agent is really working.

A ping proves more than "the process exists": the event loop must be responsive (lag
under a bound) and every essential task (device source, dispatcher, publisher) still
running. If any of them died or the loop is stuck, pings stop and systemd restarts us.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from agent import sdnotify

# A clean stop that takes longer than this logs every thread's and task's stack; one not
# over after STOP_LIMIT_S ends the process (status 1) after logging them again: well before
# systemd's TimeoutStopSec (60 s) would SIGKILL it unexplained.
STOP_STACKS_AFTER_S = 15.0
STOP_LIMIT_S = 40.0


@dataclass
class LoopLag:
    """Event-loop lag measured by a ticker; `worst_recent_s` is read by the watchdog."""

    interval_s: float = 0.25
    worst_recent_s: float = 0.0
    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - start - self.interval_s)
            self.samples.append(lag)
            if len(self.samples) > 240:
                del self.samples[:-240]
            self.worst_recent_s = max(self.samples[-40:])


def liveness_problems(
    lag: LoopLag, tasks: Mapping[str, asyncio.Task[None]], max_lag_s: float = 5.0
) -> list[str]:
    problems = [f"{name} stopped" for name, task in tasks.items() if task.done()]
    if lag.worst_recent_s > max_lag_s:
        problems.append(f"event loop lag {lag.worst_recent_s:.1f} s")
    return problems


async def run_watchdog(
    lag: LoopLag,
    tasks: Callable[[], Mapping[str, asyncio.Task[None]]],
    on_problem: Callable[[list[str]], None],
) -> None:
    interval = sdnotify.watchdog_interval()
    if interval is None:
        return
    ping_every = max(0.5, interval / 2)
    while True:
        problems = liveness_problems(lag, tasks())
        if problems:
            on_problem(problems)
        else:
            sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(ping_every)


def watch_stop(after_s: float = STOP_STACKS_AFTER_S, limit_s: float = STOP_LIMIT_S,
               out: TextIO | None = None) -> Callable[[], None]:
    """Armed when a stop begins. Still stopping after `after_s`: log every thread's and
    every task's stack. Still not exited after `limit_s` (a wait that never ends, in the
    loop or in a thread joined at exit): faulthandler's own thread logs every thread's
    stack and ends the process with status 1 - a bounded stop, explained, before systemd
    kills it unexplained. Evidence is safe either way (every commit is atomic). Returns
    the disarm."""
    stream = out if out is not None else sys.stderr
    loop = asyncio.get_running_loop()
    faulthandler.dump_traceback_later(limit_s, file=stream, exit=True)

    def stacks() -> None:
        stream.write(f"----- still stopping after {after_s:g} s: every thread -----\n")
        stream.flush()
        faulthandler.dump_traceback(file=stream, all_threads=True)
        for task in asyncio.all_tasks(loop):
            stream.write(f"----- task {task.get_name()} -----\n")
            task.print_stack(file=stream)
        stream.flush()

    handle = loop.call_later(after_s, stacks)

    def disarm() -> None:
        handle.cancel()
        faulthandler.cancel_dump_traceback_later()

    return disarm
