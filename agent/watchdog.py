"""Liveness for systemd's watchdog: ping only while the agent is really working.

A ping proves more than "the process exists": the event loop must be responsive (lag
under a bound) and every essential task (device source, dispatcher, publisher) still
running. If any of them died or the loop is stuck, pings stop and systemd restarts us.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent import sdnotify


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
