"""Sessions against a real mosquitto: birth sequence, drain, schemas, Will, shutdown."""

from __future__ import annotations

import asyncio

from agent.mqtt.transport import PahoTransport
from agent.store.db import Database

from .broker import Broker
from .central import Central
from .conftest import RecordingActions
from .helpers import (
    add_custody,
    fault_payload,
    health_sample,
    make_reporter,
    outbox_depth,
    progress_values,
    rec_state,
    running,
    until,
)


async def test_birth_then_drain_all_payloads_valid(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    await add_custody(db, 25)
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    reporter.set_dock_health(health_sample(cpu_temp_c=51.0, store_free_percent=80.0))
    reporter.set_recorder_state("REC00001", rec_state(
        "1", storage={"total_bytes": 64 << 30, "free_bytes": 60 << 30},
        clock={"drift_ms": 12.0, "corrected": False, "action": "ok"}))
    async with running(reporter):
        await central.wait_for(lambda: len(central.on("/events/custody")) == 25)
        await central.wait_for(lambda: len(central.on("/events/health")) == 1)
        await until(lambda: outbox_depth(db) == 0)
        reporter.offload_progress("REC00001", progress_values(1, 2))
        reporter.remove_recorder("REC00001")
        await central.wait_for(lambda: any(
            b and b["docked"] is False for b in central.on("/recorder/REC00001/state")))
        assert reporter.stats.acked == 26  # 25 custody events and the health sample
    await central.wait_for(lambda: central.on("dock-A/status")[-1]["state"] == "offline")
    topics = [m.topic for m in central.messages]
    status = central.on("dock-A/status")
    assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
    assert status[-1]["reason"] == "shutdown" and status[0]["bdSeq"] == status[-1]["bdSeq"] == 1
    # Birth order: status online, health, recorder birth, then the outbox events.
    first_event = next(i for i, t in enumerate(topics) if t.endswith("/events/custody"))
    assert topics.index("dock/v1/dock-A/status") < topics.index("dock/v1/dock-A/health")
    assert topics.index("dock/v1/dock-A/health") < first_event
    assert topics.index("dock/v1/dock-A/recorder/REC00001/state") < first_event
    seqs = [b["seq"] for b in central.on("/events/custody")]
    assert seqs == sorted(seqs)
    assert len({b["event_id"] for b in central.on("/events/custody")}) == 25
    assert central.on("/recorder/REC00001/progress")
    assert central.invalid == []


async def test_will_carries_bdseq_on_abrupt_disconnect(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    made: list[PahoTransport] = []
    settings = broker.settings("dock-A")

    def factory() -> PahoTransport:
        t = PahoTransport(settings, "dock-A")
        made.append(t)
        return t

    reporter = make_reporter(db, settings, actions, transport_factory=factory,
                             clock=lambda: 1_795_000_000.0)
    reporter.set_dock_health(health_sample(cpu_temp_c=40))
    reporter.set_recorder_state("REC00001", rec_state("1"))
    async with running(reporter):
        await central.wait_for(lambda: bool(central.on("/recorder/REC00001/state")))
        made[-1].abort()  # TCP drop without DISCONNECT: the broker publishes the Will
        await add_custody(db, 5)  # produced while the link is down
        reporter.remove_recorder("REC00001")  # undocked while the link is down
        reporter.set_recorder_state("REC00002", rec_state("2"))
        reporter.notify_outbox()
        await until(lambda: reporter.connected and reporter.stats.bd_seq == 2)
        await central.wait_for(lambda: len(central.on("/events/custody")) == 5)
    states = [(b["state"], b["bdSeq"], b.get("reason")) for b in central.on("dock-A/status")]
    assert states[:3] == [("online", 1, None), ("offline", 1, "connection-lost"),
                          ("online", 2, None)]
    # After the reconnect: status online(2), then health, births and pending deaths with
    # bdSeq 2, then the events that waited in the outbox.
    msgs = central.messages
    online2 = next(i for i, m in enumerate(msgs)
                   if m.topic.endswith("/status") and m.body["bdSeq"] == 2)
    after = [(m.topic.removeprefix("dock/v1/dock-A/"), m.body) for m in msgs[online2 + 1:]]
    kinds = [t for t, _ in after]
    first_event = kinds.index("events/custody")
    for topic in ("health", "recorder/REC00002/state", "recorder/REC00001/state"):
        i = kinds.index(topic)
        assert i < first_event and after[i][1]["bdSeq"] == 2
    death = after[kinds.index("recorder/REC00001/state")][1]
    assert death["docked"] is False
    assert central.invalid == []


async def test_mqtt_311_session_drain_and_commands(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    await add_custody(db, 50)
    reporter = make_reporter(db, broker.settings("dock-A", protocol="3.1.1"), actions)
    reporter.set_recorder_state("REC00001", rec_state("1"))
    async with running(reporter):
        await central.wait_for(lambda: len(central.on("/events/custody")) == 50)
        await until(lambda: outbox_depth(db) == 0)
        # no response topic in 3.1.1: the reply goes to the documented reply topic
        await central.command("dock-A", "verify", {"id": "v311", "args": {"deep": False}})
        await central.wait_for(lambda: bool(central.on("dock-A/reply/verify")))
    assert central.on("dock-A/reply/verify")[0]["ok"] is True
    assert [b["protocol"] for b in central.on("dock-A/status") if b["state"] == "online"] == [
        "3.1.1"]
    assert central.invalid == []


async def test_notify_from_worker_thread(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        def produce() -> None:  # e.g. an offload worker committing ledger entries
            from agent.store import outbox

            db.write_sync(lambda c: outbox.enqueue(c, stream="fault", subject="REC00001",
                                                   payload=fault_payload(
                                                       1, 1, "storage_error", "io error")))
            reporter.notify_outbox()

        await asyncio.to_thread(produce)
        await central.wait_for(lambda: len(central.on("/events/fault")) == 1, timeout=90)


async def test_unusable_serial_is_skipped_not_fatal(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        reporter.set_recorder_state("bad/serial", {"bay": "1"})  # not a topic level
        reporter.offload_progress("bad/serial", {"files_done": 1})
        reporter.remove_recorder("bad/serial")
        reporter.set_recorder_state("REC00001", rec_state("2"))
        await central.wait_for(lambda: bool(central.on("/recorder/REC00001/state")))
    assert not any("bad" in m.topic for m in central.messages)
