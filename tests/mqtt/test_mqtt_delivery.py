"""Delivery guarantees of the outbox drain, against a real mosquitto."""

from __future__ import annotations

from typing import Any

from agent.store.db import Database

from .broker import Broker
from .central import Central
from .conftest import RecordingActions
from .helpers import add_custody, make_reporter, outbox_depth, running, until


def assert_complete_in_order(events: list[dict[str, Any]], n: int) -> None:
    seqs = [e["seq"] for e in events]
    assert len(seqs) == n
    assert seqs == sorted(seqs), "first arrivals are in outbox order"
    assert seqs == list(range(seqs[0], seqs[0] + n)), "no gaps"


async def test_broker_restarted_mid_stream_nothing_lost(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        await add_custody(db, 2000)
        reporter.notify_outbox()
        await central.wait_for(lambda: len(central.on("/events/custody")) >= 200)
        broker.restart()  # mid-stream: part acknowledged, part in flight, part waiting
        await central.reconnect()
        await add_custody(db, 1000, start=2000)
        reporter.notify_outbox()
        try:
            await central.wait_for(lambda: len(central.unique_events()) == 3000, timeout=90)
        except TimeoutError:
            got = {int(e["seq"]) for e in central.unique_events()}
            first = min(got, default=1)
            missing = sorted(set(range(first, first + 3000)) - got)
            raise AssertionError(f"{len(missing)} events never arrived (first: {missing[:10]});"
                                 f" outbox depth {outbox_depth(db)}; broker log:"
                                 f" {broker.log()[-2000:]}") from None
        await until(lambda: outbox_depth(db) == 0)
        assert reporter.stats.reconnects >= 1
    assert_complete_in_order(central.unique_events(), 3000)
    assert central.invalid == []


async def test_broker_down_while_10000_events_produced(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        broker.stop()
        await until(lambda: not reporter.connected)
        for start in range(0, 10_000, 1000):
            await add_custody(db, 1000, start=start)
            reporter.notify_outbox()
        assert outbox_depth(db) == 10_000
        broker.start()
        await central.reconnect()
        await central.wait_for(lambda: len(central.unique_events()) == 10_000, timeout=90)
        await until(lambda: outbox_depth(db) == 0)
    assert_complete_in_order(central.unique_events(), 10_000)
    # bdSeq: each session has its own; the one that drained followed the first.
    online = [b["bdSeq"] for b in central.on("dock-A/status") if b["state"] == "online"]
    assert online[-1] > 1
    assert central.invalid == []
