"""Every offload gets a progress message and a final summary on MQTT, also when its whole
docking session (offload begun, or even finished, then pulled) falls between two of the
dock view's coalesced refreshes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import dockview
from agent.docking_state import OffloadResult, SessionSnapshot
from agent.dockview import DockView
from agent.domain import RecorderIdentity
from agent.settings import ClockSettings, DockSettings, Settings


class Session:
    def __init__(self, key: str, session_id: str) -> None:
        self.key, self.session_id = key, session_id
        self.state = "docked"
        self.offload_result: OffloadResult | None = None

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(bay="5", key=self.key, session_id=self.session_id,
                               identity=RecorderIdentity(self.key), storage_only=False,
                               state=self.state, state_since=0.0, docked_at=0.0,
                               offload_result=self.offload_result)


class Supervisor:
    def __init__(self) -> None:
        self.live: list[Session] = []

    def snapshot(self) -> list[SessionSnapshot]:
        return [s.snapshot() for s in self.live]

    def offload_states(self) -> list[tuple[str, str, str, OffloadResult | None]]:
        return [(s.key, s.session_id, s.state, s.offload_result) for s in self.live]

    def milestones(self) -> list[tuple[str, str, str, bool, bool]]:
        return [(s.key, s.session_id, s.state, False, s.offload_result is not None)
                for s in self.live]


class Reporter:
    def __init__(self) -> None:
        self.progress: list[tuple[str, str]] = []  # (serial, "progress" | outcome)

    def set_recorder_state(self, serial: str, state: Any) -> None:
        pass

    def remove_recorder(self, serial: str) -> None:
        pass

    def offload_progress(self, serial: str, progress: Any) -> None:
        self.progress.append((serial, "progress"))

    def offload_finished(self, serial: str, progress: Any, result: Any) -> None:
        self.progress.append((serial, result["outcome"]))


Parts = tuple[DockView, Supervisor, Reporter]


@pytest.fixture
def view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parts]:
    monkeypatch.setattr(dockview, "COALESCE_S", 3600.0)  # refreshes only when the test says
    settings = Settings(dock=DockSettings(id="dock-v", store_dir=tmp_path, state_dir=tmp_path),
                        clock=ClockSettings(assume_synchronised=True))
    sup, rep = Supervisor(), Reporter()
    v = DockView(settings, sup, rep)
    yield v, sup, rep


def step(v: DockView, s: Session, state: str) -> None:
    s.state = state
    v.sessions_changed()


async def test_pulled_mid_offload_between_refreshes(view: Parts) -> None:
    v, sup, rep = view
    first = Session("BWC1", "s1")
    sup.live = [first]
    for state in ("docked", "identified", "mounted", "offloading"):
        step(v, first, state)
    sup.live = []  # pulled; put back at once: a new session, not yet offloading
    second = Session("BWC1", "s2")
    sup.live = [second]
    step(v, second, "docked")
    v.refresh()  # the first refresh: the first session was never seen
    assert rep.progress == [("BWC1", "progress"), ("BWC1", "interrupted")]


async def test_finished_and_pulled_between_refreshes(view: Parts) -> None:
    v, sup, rep = view
    first = Session("BWC2", "s1")
    sup.live = [first]
    step(v, first, "offloading")
    first.offload_result = OffloadResult("complete", stored=1, bytes_copied=10)
    step(v, first, "released")
    sup.live = []
    v.refresh()  # gone before any refresh saw it: its real summary, not "interrupted"
    assert rep.progress == [("BWC2", "progress"), ("BWC2", "complete")]
    v.refresh()
    assert len(rep.progress) == 2  # once


async def test_seen_offloads_report_once(view: Parts) -> None:
    v, sup, rep = view
    s = Session("BWC3", "s1")
    sup.live = [s]
    step(v, s, "offloading")
    v.refresh()
    s.offload_result = OffloadResult("complete", stored=1)
    step(v, s, "released")
    v.refresh()
    sup.live = []
    v.refresh()
    assert [o for _, o in rep.progress if o != "progress"] == ["complete"]
    assert not v._offloads._began
