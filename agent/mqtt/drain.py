"""The outbox drain: durable events to the broker, oldest first, deleted only once acked.

Events are published at QoS 1 with at most `window` in flight; each PUBACK queues the
row's seq, and acknowledged rows are deleted in batches. After a reconnect the drain
starts again from the oldest row, so an event is re-sent (same event_id and seq) until
the broker took it. The bounds policy (oldest droppable rows first) runs every minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping

from agent.mqtt import payloads
from agent.mqtt.errors import ConnectionLost, PublishRejected
from agent.mqtt.topics import TopicError, Topics
from agent.mqtt.transport import Transport
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database

log = logging.getLogger(__name__)

BOUNDS_INTERVAL_S = 60.0


class OutboxDrain:
    def __init__(self, db: Database, settings: MqttSettings, topics: Topics, *, window: int,
                 batch: int, clock: Callable[[], float],
                 on_rejected: Callable[[], None]) -> None:
        """`on_rejected` drops the link when the broker refuses an event (never deleted)."""
        self._db = db
        self._settings = settings
        self._topics = topics
        self._window = window
        self._batch = batch
        self._clock = clock
        self._on_rejected = on_rejected
        self.wake = asyncio.Event()
        self._acked_seqs: list[int] = []
        self._ack_ready = asyncio.Event()
        self.in_flight = 0
        self._window_open = asyncio.Event()
        self._window_open.set()
        self.published = 0  # events handed to the broker (re-sends included)
        self.acked = 0  # events acknowledged and deleted
        self.outbox_stats = outbox.OutboxStats(0, None, 0)

    async def drain(self, transport: Transport) -> None:
        after = 0
        while True:
            await self._window_open.wait()
            self.wake.clear()
            if not transport.connected:
                raise ConnectionLost("connection closed")
            room = min(self._batch, self._window - self.in_flight)
            if room <= 0:
                self._window_open.clear()
                continue
            rows = await self._db.read(functools.partial(outbox.peek, limit=room, after_seq=after))
            if not rows:
                self.outbox_stats = await self._db.read(outbox.stats)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BOUNDS_INTERVAL_S):
                        await self.wake.wait()
                continue
            for ev in rows:
                try:
                    topic = self._topics.event(ev.stream)
                except TopicError:
                    topic = self._topics.event("other")
                dock_id = self._topics.dock_id
                fut = transport.publish(topic, payloads.encode(payloads.event(dock_id, ev)))
                self.published += 1
                self.in_flight += 1
                fut.add_done_callback(functools.partial(self._on_event_done, ev.seq))
                after = ev.seq
            if self.in_flight >= self._window:
                self._window_open.clear()

    def _on_event_done(self, seq: int, fut: asyncio.Future[None]) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self._window_open.set()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self._acked_seqs.append(seq)
            self._ack_ready.set()
        elif isinstance(exc, PublishRejected):
            # Never delete what the broker refused: drop the link and re-send later.
            log.error("broker refused outbox event %d: %s; reconnecting", seq, exc)
            self._on_rejected()

    async def commit_acks(self) -> None:
        while True:
            await self._ack_ready.wait()
            await self.flush_acks()

    async def flush_acks(self) -> None:
        self._ack_ready.clear()
        seqs, self._acked_seqs = self._acked_seqs, []
        if seqs:
            now = self._clock()
            await self._db.write(lambda c: outbox.ack(c, seqs, now))
            self.acked += len(seqs)
            o = self.outbox_stats
            self.outbox_stats = dataclasses.replace(o, depth=max(0, o.depth - len(seqs)))

    async def enqueue_health(self, sample: Mapping[str, object]) -> bool:
        """Keep a health sample as a droppable `events/health` event; False if it could not
        be written (a health sample must never take reporting down)."""
        now = self._clock()

        def tx(conn: sqlite3.Connection) -> None:
            body = payloads.health_event(now, sample, outbox.stats(conn))
            outbox.enqueue(conn, stream="health", payload=body, droppable=True, now=now)

        try:
            await self._db.write(tx)
        except Exception:
            log.exception("could not keep a health sample in the outbox")
            return False
        return True

    def session_ended(self) -> None:
        self.in_flight = 0
        self._window_open.set()

    async def enforce_bounds(self) -> int:
        """One pass of the bounds policy; returns the rows dropped."""
        s = self._settings
        now = self._clock()

        def tx(c: sqlite3.Connection) -> int:
            outbox.prune_sent(c, max_age_days=s.outbox_history_days, now=now)
            return outbox.enforce_bounds(c, max_events=s.outbox_max_events,
                                         max_age_days=s.outbox_max_age_days, now=now)

        dropped = await self._db.write(tx)
        self.outbox_stats = await self._db.read(outbox.stats)
        return dropped
