"""The fleet view against a real broker and a real reporter."""

from __future__ import annotations

import io
import json
import sqlite3

import pytest

from agent.mqtt import payloads
from agent.mqtt.fleet import FleetModel, fleet_settings, run_fleet
from agent.mqtt.transport import PahoTransport
from agent.store import outbox
from agent.store.db import Database

from .broker import Broker
from .central import Central
from .conftest import RecordingActions
from .helpers import (
    fault_payload,
    health_sample,
    ledger_payload,
    make_reporter,
    outbox_depth,
    rec_state,
    running,
    until,
)


async def test_fleet_once_json_and_table(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    def events(conn: sqlite3.Connection) -> None:
        outbox.enqueue(conn, stream="custody", subject="REC00001",
                       payload=ledger_payload(1, "offloaded"))
        # Two open faults of one recorder stay two; a clear closes only its own fault.
        outbox.enqueue(conn, stream="fault", subject="REC00002", payload=fault_payload(
            2, 1, "battery_failed", "battery health 41% is below 60%", serial="REC00002"))
        outbox.enqueue(conn, stream="fault", subject="REC00002", payload=fault_payload(
            3, 2, "clock_not_set", "set clock refused", serial="REC00002"))
        outbox.enqueue(conn, stream="fault", subject="REC00001", payload=fault_payload(
            4, 3, "clock_not_set", "set clock refused"))
        outbox.enqueue(conn, stream="fault", subject="REC00001", payload=fault_payload(
            5, 3, "clock_not_set", "recorder docked again", cleared=True))

    db.write_sync(events)
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    reporter.set_dock_health(health_sample(cpu_temp_c=50))
    reporter.set_recorder_state("REC00001", rec_state("1", percent=97))
    reporter.set_recorder_state("REC00002", rec_state(
        "2", percent=3, officer_no=None, verdict="NOT_READY",
        reasons=[("battery_low", "battery below 90%")]))
    async with running(reporter):
        await until(lambda: outbox_depth(db) == 0)
        await central.wait_for(lambda: len(central.on("/events/fault")) == 4)
        out = io.StringIO()
        model = await run_fleet(broker.settings("central", client_id=None), json=True,
                                once=True, out=out, settle_s=1.0)
        text = io.StringIO()
        await run_fleet(broker.settings("central", client_id=None), once=True, out=text,
                        settle_s=0.5)
    snap = json.loads(out.getvalue())
    (dock,) = snap["docks"]
    assert dock["dock_id"] == "dock-A" and dock["online"] and dock["bdSeq"] == 1
    recs = {r["serial"]: r for r in dock["recorders"]}
    assert recs["REC00001"]["readiness"] == "READY" and recs["REC00001"]["officer"] == "0042"
    assert recs["REC00002"]["reasons"] == ["battery below 90%"]
    assert not recs["REC00001"]["stale"]
    # Retained state only: events are not retained, so a fresh viewer sees no faults...
    assert dock["open_faults"] == []
    # ...but a live model fed the event stream tracks open faults and offloads.
    live = FleetModel()
    for m in central.messages:
        live.apply(m.topic, json.dumps(m.body).encode() if m.body is not None else b"")
    live_dock = live.snapshot()["docks"][0]
    assert sorted((f["subject"], f["code"], f["message"]) for f in live_dock["open_faults"]) == [
        ("REC00002", "battery_failed", "battery health 41% is below 60%"),
        ("REC00002", "clock_not_set", "set clock refused")]
    assert live.recorders[("dock-A", "REC00001")].last_offload is not None
    table = text.getvalue()
    assert "REC00001" in table and "READY" in table and "dock-A" in table
    assert model.docks["dock-A"].online


async def test_fleet_marks_recorders_stale_after_dock_death(
        broker: Broker, db: Database, actions: RecordingActions) -> None:
    made: list[PahoTransport] = []
    settings = broker.settings("dock-A")

    def factory() -> PahoTransport:
        made.append(PahoTransport(settings, "dock-A"))
        return made[-1]

    reporter = make_reporter(db, settings, actions, transport_factory=factory)
    reporter.set_recorder_state("REC00001", rec_state("1"))
    fleet_cfg = broker.settings("central", client_id=None)
    async with running(reporter):
        model = await run_fleet(fleet_cfg, once=True, out=io.StringIO(), settle_s=0.5)
        assert not model.stale(model.recorders[("dock-A", "REC00001")])
        made[-1].abort()  # the Will (bdSeq 1) arrives; the reporter comes back as bdSeq 2
        await until(lambda: reporter.stats.bd_seq == 2 and reporter.connected)
        model = await run_fleet(fleet_cfg, once=True, out=io.StringIO(), settle_s=0.5)
        assert model.docks["dock-A"].online and model.docks["dock-A"].bd_seq == 2
        assert not model.stale(model.recorders[("dock-A", "REC00001")])
    # clean shutdown: retained status offline (bdSeq 2)
    model = await run_fleet(fleet_cfg, once=True, out=io.StringIO(), settle_s=0.5)
    dock = model.docks["dock-A"]
    assert not dock.online and dock.bd_seq == 2
    # the recorder birth is still retained, but its dock is offline: stale, and the dock
    # said so itself in the retained state before it went
    rec = model.recorders[("dock-A", "REC00001")]
    assert model.stale(rec) and rec.marked_stale and rec.docked


def test_fleet_settings_parse() -> None:
    s = fleet_settings("broker.example:8883", ca_file=None)
    assert (s.host, s.port, s.tls) == ("broker.example", 8883, True)
    with pytest.raises(ValueError, match="HOST:PORT"):
        fleet_settings("nohost")


def test_old_will_does_not_kill_new_session() -> None:
    def status(body: dict[str, object]) -> bytes:
        return payloads.encode(body)

    m = FleetModel()
    assert m.apply("dock/v1/d1/status",
                   status(payloads.status_online("d1", 5, 1.0e9, "1.0", "5")))
    m.apply("dock/v1/d1/status",
            status(payloads.status_offline("d1", 4, "connection-lost", None)))
    assert m.docks["d1"].online and m.docks["d1"].invalid_messages == 0
    m.apply("dock/v1/d1/status",
            status(payloads.status_offline("d1", 5, "connection-lost", None)))
    assert not m.docks["d1"].online and m.docks["d1"].invalid_messages == 0
    assert m.apply("dock/v1/d1/status", b"not json")  # refused, and counted against d1
    assert m.docks["d1"].invalid_messages == 1 and not m.docks["d1"].online

