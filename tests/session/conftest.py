"""Fixtures for docking-session tests (the bench itself is in session_bench.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.session.supervisor import BaySupervisor
from hw_sim.recorder import DEFAULT_FLEET_SECRET

from .session_bench import Bench, Env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.db.close()


@pytest.fixture
async def make_bench(env: Env, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`bench = await make_bench(**deps_overrides)`: a supervisor + virtual recorders."""
    benches: list[Bench] = []

    async def make(**kw: Any) -> Bench:
        sup = BaySupervisor(env.deps(**kw))
        work = tmp_path / f"recorders{len(benches)}"
        work.mkdir()
        bench = Bench(sup, work, DEFAULT_FLEET_SECRET)
        benches.append(bench)
        return bench

    yield make
    for b in benches:
        await b.stop()
        await b.supervisor.aclose()
    await env.offloader.close()


@pytest.fixture
async def bench(make_bench: Callable[..., Any]) -> Bench:
    b: Bench = await make_bench()
    return b
