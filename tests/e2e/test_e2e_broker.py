"""The broker is down when the agent starts and stays down for a while: docking and
offloading go on, custody events wait in the durable outbox, and once the broker is back
every one of them reaches the central side, in order, without gaps."""

from __future__ import annotations

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .checks import all_ledger_delivered, check_ledger_delivered, ledger_events
from .conftest import DOCK_ID, RigFactory
from .harness import check_stored_exactly, expected, until


async def test_broker_down_then_up(make_rig: RigFactory, broker: Broker,
                                   central: Central) -> None:
    # The central side's session (and subscription) persists in the broker across the
    # outage, like a real consumer's would.
    broker.stop()
    rig = make_rig(broker.settings(DOCK_ID))
    specs = [
        RecorderSpec("BWC50001", officer=OfficerRecord("5001001", "Lu Bo", "U05", "Unit 5"),
                     footage=FootageSpec(count=3, size_bytes=1 * MIB, seed=51)),
        RecorderSpec("BWC50002", officer=None, clock_offset_s=12.0,
                     footage=FootageSpec(count=2, size_bytes=2 * MIB, seed=52)),
    ]
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    for bay, s in enumerate(specs, start=1):
        await rig.plug(str(bay), s)
    for s in specs:
        await rig.wait_released(s.serial)
    for s in specs:
        check_stored_exactly(rig, s, await expected(s))
    await rig.unplug("2")
    await rig.wait_ledger(lambda rows: any(r["kind"] == "undocked" for r in rows), "undocked")

    # Everything waits in the outbox; the agent knows it is offline.
    ledger_top = rig.query("SELECT max(seq) FROM ledger")[0][0]
    waiting = rig.query("SELECT count(*) FROM outbox WHERE stream IN ('custody', 'fault')")
    assert waiting[0][0] == ledger_top
    status = await rig.dockctl_json("status")
    assert status["broker_connected"] is False
    assert ledger_events(central) == []

    broker.start()
    await central.reconnect()
    await until(lambda: all_ledger_delivered(rig, central), "outbox delivered after outage",
                agent=rig.agent, timeout=90)
    check_ledger_delivered(rig, central)
    await until(lambda: not rig.query(
        "SELECT 1 FROM outbox WHERE stream IN ('custody', 'fault')"),
        "outbox acknowledged and emptied", agent=rig.agent)
    # Retained state after the outage: the docked recorder's birth, the undocked one's death.
    await until(lambda: any(b and b.get("docked") for b in central.on("/recorder/BWC50001/state")),
                "birth after reconnect", agent=rig.agent)
    await until(lambda: any(b and b.get("docked") is False
                            for b in central.on("/recorder/BWC50002/state")),
                "death after reconnect", agent=rig.agent)
    assert (await rig.dockctl_json("status"))["broker_connected"] is True
    assert rig.agent.terminate() == 0
