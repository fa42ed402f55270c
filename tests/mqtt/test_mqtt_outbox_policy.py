"""Outbox bounds (only health samples are ever dropped, and counted) and progress throttling."""

from __future__ import annotations

import sqlite3
import time

from agent.mqtt import payloads
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
    progress_values,
    rec_state,
    running,
    until,
)

DAY = 86400.0


def fill(
        conn: sqlite3.Connection, *, health: int, custody: int, fault: int, created: float) -> None:
    # interleaved, like a real dock: health samples between custody events
    for i in range(max(health, custody, fault)):
        if i < custody:
            outbox.enqueue(conn, stream="custody", subject="REC00001", now=created,
                           payload=ledger_payload(i + 1))
        if i < health:
            outbox.enqueue(conn, stream="health", droppable=True, now=created,
                           payload=payloads.health_event(
                               created, health_sample(cpu_temp_c=40 + i % 10),
                               outbox.OutboxStats(0, None, 0)))
        if i < fault:
            outbox.enqueue(conn, stream="fault", subject="REC00001", now=created,
                           payload=fault_payload(i + 1, i + 1, "battery_failed", "worn out"))


def streams(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT stream, COUNT(*) FROM outbox GROUP BY stream").fetchall())


def test_bounds_drop_only_health_and_count(db: Database) -> None:
    now = time.time()
    db.write_sync(lambda c: fill(c, health=300, custody=100, fault=10, created=now - 40 * DAY))
    db.write_sync(lambda c: fill(c, health=50, custody=5, fault=0, created=now))
    # Age: all old health samples go, old custody and fault events stay.
    dropped = db.write_sync(lambda c: outbox.enforce_bounds(
        c, max_events=10_000, max_age_days=30, now=now))
    assert dropped == 300
    assert db.read_sync(streams) == {"custody": 105, "fault": 10, "health": 50}
    # Size: the oldest health samples go first, custody and fault never.
    dropped = db.write_sync(lambda c: outbox.enforce_bounds(
        c, max_events=140, max_age_days=30, now=now))
    assert dropped == 25
    assert db.read_sync(streams) == {"custody": 105, "fault": 10, "health": 25}
    kept = db.read_sync(lambda c: [r[0] for r in c.execute(
        "SELECT payload FROM outbox WHERE stream='health' ORDER BY seq")])
    assert [eval_temp(p) for p in kept] == [40 + i % 10 for i in range(25, 50)]
    # More than the bound in custody alone: nothing else can go, nothing custody is lost.
    dropped = db.write_sync(lambda c: outbox.enforce_bounds(
        c, max_events=50, max_age_days=30, now=now))
    assert dropped == 25
    assert db.read_sync(streams) == {"custody": 105, "fault": 10}
    st = db.read_sync(outbox.stats)
    assert st.depth == 115 and st.dropped == 350
    assert st.oldest_created_at is not None and st.oldest_created_at < now - 39 * DAY


def eval_temp(payload: str) -> int:
    import json

    return int(json.loads(payload)["health"]["cpu_temp_c"])


async def test_reporter_applies_bounds_and_publishes_dropped(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    now = time.time()
    db.write_sync(lambda c: fill(c, health=1500, custody=600, fault=3, created=now - DAY))
    settings = broker.settings("dock-A", outbox_max_events=1000, outbox_max_age_days=30)
    reporter = make_reporter(db, settings, actions)
    async with running(reporter):
        await until(lambda: outbox_depth(db) == 0)
        await central.wait_for(lambda: len(central.on("/events/custody")) == 600)
        await central.wait_for(lambda: len(central.on("/events/fault")) == 3)
        reporter.set_dock_health(health_sample(cpu_temp_c=46))
        await central.wait_for(lambda: any(
            b["health"]["cpu_temp_c"] == 46 for b in central.on("dock-A/health")))
        assert reporter.stats.dropped == 1103
        # ...and the sample taken while connected goes through the outbox as well.
        await central.wait_for(lambda: len(central.on("/events/health")) == 1500 - 1103 + 1)
        assert central.on("/events/health")[-1]["payload"]["health"]["cpu_temp_c"] == 46
    # The bounds ran before the drain: 2103 rows, bound 1000 -> the 1103 oldest health dropped.
    last = central.on("dock-A/health")[-1]
    assert last["outbox"]["dropped"] == 1103 and last["health"]["cpu_temp_c"] == 46
    assert central.invalid == []


async def test_progress_is_throttled_and_latest_always_sent(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    settings = broker.settings("dock-A", progress_interval_s=0.5)
    reporter = make_reporter(db, settings, actions)
    reporter.set_recorder_state("REC00001", rec_state("1"))
    async with running(reporter):
        for i in range(1, 501):
            reporter.offload_progress("REC00001", progress_values(i, 500, i * 1000, 500_000))
        for i in range(1, 11):
            reporter.offload_progress("REC00002", progress_values(i, 10))
        await central.wait_for(lambda: any(
            b["files_done"] == 500 for b in central.on("/recorder/REC00001/progress")))
        await central.wait_for(lambda: any(
            b["files_done"] == 10 for b in central.on("/recorder/REC00002/progress")))
        # The retained state carries the latest progress too (for births after reconnect).
        await central.command("dock-A", "rebirth", {"id": "rb"})
        await central.wait_for(lambda: len(central.on("/recorder/REC00001/state")) == 2)
    p1 = [b["files_done"] for b in central.on("/recorder/REC00001/progress")]
    p2 = [b["files_done"] for b in central.on("/recorder/REC00002/progress")]
    assert p1[0] == 1 and p1[-1] == 500 and len(p1) < 20  # 500 updates coalesced
    assert p2[0] == 1 and p2[-1] == 10 and len(p2) < 10
    assert p1 == sorted(p1)
    assert central.on("/recorder/REC00001/state")[-1]["offload"]["files_done"] == 500
    assert central.invalid == []


async def test_disabled_reporter_still_bounds_the_outbox(
        db: Database, actions: RecordingActions) -> None:
    from agent.settings import MqttSettings

    now = time.time()
    db.write_sync(lambda c: fill(c, health=20, custody=5, fault=1, created=now - 60 * DAY))
    reporter = make_reporter(db, MqttSettings(enabled=False), actions)
    async with running(reporter, wait_connected=False):
        await until(lambda: db.read_sync(streams) == {"custody": 5, "fault": 1})
        assert not reporter.connected
    assert db.read_sync(outbox.stats).dropped == 20
