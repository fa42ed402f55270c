"""The first bytes an offload copies are a milestone: they reach a real broker at once,
however long the progress interval; later progress is still throttled to one message per
interval, and the final summary is never held back."""

from __future__ import annotations

from agent.docking_state import OffloadResult
from agent.store.db import Database

from .broker import Broker
from .central import Central
from .conftest import RecordingActions
from .helpers import make_reporter, progress_values, rec_state, running

HOUR = 3600.0  # a progress interval no test waits out


async def test_first_bytes_pass_the_progress_throttle(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    settings = broker.settings("dock-A", progress_interval_s=HOUR)
    reporter = make_reporter(db, settings, actions)
    topic = "/recorder/REC00001/progress"
    async with running(reporter):
        reporter.set_recorder_state("REC00001", rec_state("1", state="offloading"))
        reporter.offload_progress("REC00001", progress_values(0, 2, 0, 200))
        await central.wait_for(lambda: len(central.on(topic)) == 1)
        # within the interval of the first message: only a milestone goes out now
        reporter.offload_progress("REC00001", progress_values(0, 2, 50, 200))
        await central.wait_for(lambda: len(central.on(topic)) == 2)
        reporter.offload_progress("REC00001", progress_values(1, 2, 100, 200))  # parked
        reporter.offload_finished("REC00001", progress_values(2, 2, 200, 200),
                                  OffloadResult("complete", stored=2, bytes_copied=200).as_record())
        await central.wait_for(lambda: len(central.on(topic)) == 3)
    done = [body["bytes_done"] for body in central.on(topic)]
    assert done == [0, 50, 200]  # the parked 100 was superseded by the final summary
    assert central.invalid == []


async def test_a_new_offload_of_the_same_recorder_has_its_own_first_bytes(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    settings = broker.settings("dock-A", progress_interval_s=HOUR)
    reporter = make_reporter(db, settings, actions)
    topic = "/recorder/REC00001/progress"
    async with running(reporter):
        for docking in range(2):
            seen = 2 * docking
            reporter.set_recorder_state("REC00001", rec_state("1", state="offloading"))
            reporter.offload_progress("REC00001", progress_values(0, 1, 10, 100))
            reporter.offload_progress("REC00001", progress_values(0, 1, 20, 100))  # parked
            await central.wait_for(lambda: len(central.on(topic)) == seen + 1)
            reporter.remove_recorder("REC00001")  # pulled: the parked value goes out
            await central.wait_for(lambda: len(central.on(topic)) == seen + 2)
    assert [body["bytes_done"] for body in central.on(topic)] == [10, 20, 10, 20]


def latest_state(central: Central, topic: str) -> object:
    states = central.on(topic)
    return states[-1].get("state") if states else None


async def test_state_keeps_its_docking_s_latest_progress(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    """A state change after the offload (released, a battery reading) still carries the
    docking's last progress under `offload`; the next docking starts without it."""
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    topic = "/recorder/REC00001/state"
    async with running(reporter):
        reporter.set_recorder_state("REC00001", rec_state("1", state="offloading"))
        reporter.offload_finished("REC00001", progress_values(2, 2, 200, 200),
                                  OffloadResult("complete", stored=2).as_record())
        reporter.set_recorder_state("REC00001", rec_state("1", state="released"))
        # by the latest state, not a count: the rebirth after connecting may repeat one
        await central.wait_for(lambda: latest_state(central, topic) == "released")
        assert central.on(topic)[-1]["offload"]["bytes_done"] == 200
        reporter.set_recorder_state("REC00001", rec_state(
            "1", state="detected", docked_at="2026-11-23T09:00:00.000Z"))
        await central.wait_for(lambda: latest_state(central, topic) == "detected")
    assert "offload" not in central.on(topic)[-1]
    assert central.invalid == []


async def test_sessions_ended_by_the_stop_go_stale_not_dead(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    """The agent stopping ends every session; its recorders are still in their bays, so
    their last word is their state before the stop, marked stale, never a death."""
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    topic = "/recorder/REC00001/state"
    async with running(reporter):
        reporter.set_recorder_state("REC00001", rec_state("1", state="released"))
        await central.wait_for(lambda: len(central.on(topic)) == 1)
        reporter.freeze_states()
        reporter.set_recorder_state("REC00001", rec_state("1", state="removed"))
        reporter.remove_recorder("REC00001")
    await central.wait_for(lambda: central.on("dock-A/status")[-1]["state"] == "offline")
    states = central.on(topic)
    assert [(s["state"], s["docked"], s.get("stale")) for s in states] == [
        ("released", True, None), ("released", True, True)]
