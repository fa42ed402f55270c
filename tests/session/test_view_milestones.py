"""The dock view publishes a docking's milestones at once (every state, the first bytes
copied, the result, the undocking) and coalesces mere progress: a session's progress
callbacks fire per chunk on every bay, its milestones only a few times per docking."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import dockview
from agent.docking_state import OffloadProgressFacts, OffloadResult, SessionSnapshot
from agent.dockview import DockView
from agent.domain import RecorderIdentity
from agent.settings import ClockSettings, DockSettings, Settings


class Session:
    def __init__(self, key: str, session_id: str) -> None:
        self.key, self.session_id = key, session_id
        self.state = "detected"
        self.bytes_done: int | None = None
        self.offload_result: OffloadResult | None = None

    def progress(self) -> OffloadProgressFacts | None:
        if self.bytes_done is None:
            return None
        return OffloadProgressFacts(0, 1, self.bytes_done, 1000, 1.0e6, None, None)

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(bay="3", key=self.key, session_id=self.session_id,
                               identity=RecorderIdentity(self.key), storage_only=False,
                               state=self.state, state_since=0.0, docked_at=0.0,
                               offload=self.progress(), offload_result=self.offload_result)


class Board:
    def __init__(self) -> None:
        self.live: list[Session] = []

    def snapshot(self) -> list[SessionSnapshot]:
        return [s.snapshot() for s in self.live]

    def offload_states(self) -> list[tuple[str, str, str, OffloadResult | None]]:
        return [(s.key, s.session_id, s.state, s.offload_result) for s in self.live]

    def milestones(self) -> list[tuple[str, str, str, bool, bool]]:
        return [(s.key, s.session_id, s.state, bool(s.bytes_done),
                 s.offload_result is not None) for s in self.live]


class Publisher:
    def __init__(self) -> None:
        self.states: list[str] = []
        self.progress: list[int] = []  # bytes_done of each progress message
        self.finished: list[str] = []
        self.removed: list[str] = []

    def set_recorder_state(self, serial: str, state: Any) -> None:
        self.states.append(state["state"])

    def remove_recorder(self, serial: str) -> None:
        self.removed.append(serial)

    def offload_progress(self, serial: str, progress: Any) -> None:
        self.progress.append(progress["bytes_done"])

    def offload_finished(self, serial: str, progress: Any, result: Any) -> None:
        self.finished.append(result["outcome"])


Parts = tuple[DockView, Board, Publisher]


@pytest.fixture
def view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parts]:
    monkeypatch.setattr(dockview, "COALESCE_S", 3600.0)  # a coalesced refresh never comes
    settings = Settings(dock=DockSettings(id="dock-m", store_dir=tmp_path, state_dir=tmp_path),
                        clock=ClockSettings(assume_synchronised=True))
    board, pub = Board(), Publisher()
    yield DockView(settings, board, pub), board, pub


async def until(pred: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


async def test_every_milestone_is_published_without_the_coalescing_delay(view: Parts) -> None:
    v, board, pub = view
    s = Session("BWC7", "s1")
    board.live = [s]
    v.sessions_changed()  # docked
    await until(lambda: pub.states == ["detected"])
    for state in ("authenticated", "identified", "clock_checked", "offloading"):
        s.state = state
        v.sessions_changed()
        await until(lambda: pub.states[-1:] == [s.state])
    assert pub.states == ["detected", "authenticated", "identified", "clock_checked",
                          "offloading"]
    s.bytes_done = 0
    v.sessions_changed()  # progress only: coalesced
    s.bytes_done = 64
    v.sessions_changed()  # the first bytes copied: a milestone
    await until(lambda: pub.progress == [64])
    s.offload_result = OffloadResult("complete", stored=1, bytes_copied=1000)
    s.state = "released"
    v.sessions_changed()
    await until(lambda: pub.finished == ["complete"] and pub.states[-1] == "released")
    board.live = []
    v.sessions_changed()  # undocked
    await until(lambda: pub.removed == ["BWC7"])


async def test_progress_alone_is_coalesced(view: Parts) -> None:
    v, board, pub = view
    s = Session("BWC8", "s1")
    s.state, s.bytes_done = "offloading", 1
    board.live = [s]
    v.sessions_changed()
    await until(lambda: pub.progress == [1])
    for n in range(2, 100):
        s.bytes_done = n
        v.sessions_changed()
        await asyncio.sleep(0)  # a loop turn between callbacks, as chunks arrive
    s.offload_result = OffloadResult("complete", stored=1, bytes_copied=99)
    s.state = "released"
    v.sessions_changed()
    await until(lambda: pub.finished == ["complete"])
    assert pub.progress == [1]  # no refresh per chunk: only milestones went out


async def test_a_milestone_refreshes_its_own_recorder_only(view: Parts) -> None:
    """A docking does not wait for the views of every busy bay: the other bays' mere
    progress stays with the coalesced refresh."""
    v, board, pub = view
    busy, plugged = Session("BWC9", "s1"), Session("BWC10", "s2")
    busy.state, busy.bytes_done = "offloading", 1
    board.live = [busy, plugged]
    v.sessions_changed()
    await until(lambda: pub.progress == [1] and pub.states == ["offloading", "detected"])
    busy.bytes_done = 5
    v.sessions_changed()  # progress only
    plugged.state = "identified"
    v.sessions_changed()
    await until(lambda: pub.states[-1:] == ["identified"])
    assert pub.progress == [1]
    v.refresh()  # the coalesced refresh, when it comes, has the busy bay's progress
    assert pub.progress == [1, 5]
