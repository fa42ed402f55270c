"""Gap repair with a real broker killed in its window.

mosquitto acknowledges a QoS 1 publish before it has written it to disk for an offline
persistent subscriber. Here the fleet view's session is on disk (saved at a clean broker
restart), the view goes away, the dock publishes custody events (acknowledged, so gone
from its outbox), and the broker is killed before it saves them: those events are lost
for the view. When the view comes back it sees the jump in `seq`, asks the dock with
`resend`, and gets every event back from the dock's ledger — same event ids."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import Any

from agent.mqtt.fleet import DockView, FleetModel, run_fleet
from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker

from .conftest import DOCK_ID, RigFactory
from .harness import until


class RecordingModel(FleetModel):
    """The fleet model, also keeping which ledger entries arrived and the gaps it saw."""

    def __init__(self) -> None:
        super().__init__("dock/v1", clock=time.monotonic)
        self.ledger_seqs: dict[int, str] = {}  # ledger seq -> event id
        self.most_missing = 0
        self.resent: list[int] = []

    def _on_resend_reply(self, dock_id: str, body: dict[str, Any]) -> None:
        super()._on_resend_reply(dock_id, body)
        if body.get("ok"):
            self.resent += body["result"]["resent"]

    def _on_event(self, dock_id: str, stream: str, body: dict[str, Any]) -> None:
        super()._on_event(dock_id, stream, body)
        if stream in ("custody", "fault"):
            self.ledger_seqs[int(body["payload"]["seq"])] = body["event_id"]

        dock = self.docks[dock_id]
        self.most_missing = max(self.most_missing, len(dock.missing))

    def dock(self) -> DockView | None:
        return self.docks.get(DOCK_ID)


def spec(serial: str, seed: int) -> RecorderSpec:
    return RecorderSpec(serial, officer=OfficerRecord("8001001", "Wu Fang", "U08", "Unit 8"),
                        footage=FootageSpec(count=3, size_bytes=1 * MIB, seed=seed))


async def test_events_lost_by_a_killed_broker_are_repaired(make_rig: RigFactory,
                                                           broker: Broker) -> None:
    rig = make_rig(broker.settings(DOCK_ID))
    fleet_cfg = broker.settings("central", client_id="fleet-gap-repair")
    model = RecordingModel()

    def start_fleet() -> asyncio.Task[FleetModel]:
        return asyncio.create_task(run_fleet(
            fleet_cfg, json=True, out=io.StringIO(), refresh_s=0.2, gap_grace_s=1.0,
            model=model, session_expiry_s=3600))

    def ledger_top() -> int:
        return int(rig.query("SELECT coalesce(max(seq), 0) FROM ledger")[0][0])

    def seen_all() -> bool:
        return set(model.ledger_seqs) >= set(range(1, ledger_top() + 1))

    fleet = start_fleet()
    try:
        await rig.start_dock()
        rig.start_agent()
        await rig.wait_agent_up()
        await rig.plug("1", spec("BWC80001", 81))
        await rig.wait_released("BWC80001")
        await until(seen_all, "fleet view has the first docking", agent=rig.agent)
        # A clean restart writes the broker's state: the view's session is now on disk.
        broker.restart()
        await until(lambda: (d := model.dock()) is not None and d.online and d.bd_seq >= 2,
                    "dock and view back after the restart", agent=rig.agent)

        # The view goes away; its session stays and queues what the dock publishes.
        fleet.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fleet
        before = ledger_top()
        await rig.plug("2", spec("BWC80002", 82))
        await rig.wait_released("BWC80002")
        await until(lambda: not rig.query(
            "SELECT 1 FROM outbox WHERE stream IN ('custody', 'fault')"),
            "the broker acknowledged every event", agent=rig.agent)
        lost = set(range(before + 1, ledger_top() + 1))
        assert lost
        # Killed before it saved them: the queued events are gone for the view.
        broker.stop(kill=True)
        broker.start()

        fleet = start_fleet()  # same client id: the session (from disk) resumes
        await rig.unplug("1")  # a new event: the view sees the jump in seq
        await until(lambda: model.most_missing > 0, "gap detected", agent=rig.agent,
                    timeout=90)
        await until(seen_all, "every event back after the resend", agent=rig.agent,
                    timeout=90)
        dock = model.dock()
        assert dock is not None
        await until(lambda: not dock.missing, "no gap left", agent=rig.agent)
        assert not dock.lost
        assert lost <= set(model.ledger_seqs)
        hashes = {r["seq"]: r["hash"] for r in rig.ledger()}
        assert all(model.ledger_seqs[q] == hashes[q] for q in lost)  # same event ids
        # ...because the dock re-sent them on request (not a late delivery by the broker)
        await until(lambda: bool(model.resent), "the dock's resend reply", agent=rig.agent)
    finally:
        fleet.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fleet
    assert rig.agent.terminate() == 0
