"""The reporter: one MQTT session after another, births, the outbox drain and commands.

Session (Sparkplug-style): bump the persisted bdSeq, connect with the Will (status offline
carrying that bdSeq), subscribe to the dock's command topics, publish status online with the
same bdSeq, republish all retained state (health, one birth per docked recorder, deaths not
yet acknowledged), then drain the outbox oldest-first at QoS 1 with a bounded window of
publishes in flight. A row is deleted only after its PUBACK; after a reconnect the drain
restarts from the oldest row, so an event is re-sent (same event_id and seq) until acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.mqtt import payloads
from agent.mqtt.backoff import Backoff
from agent.mqtt.checkpoints import PREVIOUS as PREVIOUS_CHECKPOINTS
from agent.mqtt.checkpoints import checkpoint_payload
from agent.mqtt.commands import CommandActions, CommandProcessor, reply_route
from agent.mqtt.errors import CommandRejected, ConnectionLost, MqttError, PublishRejected
from agent.mqtt.throttle import Throttle
from agent.mqtt.topics import TopicError, Topics
from agent.mqtt.transport import Message, PahoTransport, Transport, Will
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database, DatabaseFull
from agent.store.ledger import get_entry as ledger_entry
from agent.store.ledger import recent_checkpoints

log = logging.getLogger(__name__)

BDSEQ_COUNTER = "bdseq"
BOUNDS_INTERVAL_S = 60.0
GOOD_SESSION_S = 30.0  # a session this long resets the reconnect backoff
MAX_RESEND = 10_000  # events per resend request


@dataclass(frozen=True, slots=True)
class ReporterStats:
    connected: bool
    bd_seq: int
    published: int  # outbox events handed to the broker (re-sends included)
    acked: int  # outbox events acknowledged and deleted
    in_flight: int
    reconnects: int
    dropped: int  # health samples dropped by the bounds policy (persisted, last known)
    outbox_depth: int  # last known
    outbox_oldest_age_s: float | None


class Reporter:
    def __init__(
        self,
        db: Database,
        settings: MqttSettings,
        dock_id: str,
        actions: CommandActions,
        *,
        agent_version: str,
        window: int = 1000,
        batch: int = 500,
        transport_factory: Callable[[], Transport] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._settings = settings
        self._dock_id = dock_id
        self._version = agent_version
        self._topics = Topics(settings.topic_prefix, dock_id)
        self._window = window
        self._batch = batch
        self._clock = clock
        client_id = settings.client_id or dock_id
        self._factory = transport_factory or (
            lambda: PahoTransport(settings, client_id)
        )
        self._commands = CommandProcessor(db, dock_id, actions, self.republish, clock,
                                          resend=self.resend)
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # made on the loop: notify works before run()
            self._loop = asyncio.get_running_loop()
        self._online = False
        self._bd_seq = 0
        self._recorders: dict[str, dict[str, Any]] = {}
        self._deaths: dict[str, float] = {}  # serial -> undock time, until acknowledged
        self._health: dict[str, Any] = {}
        self._checkpoint_seq: int | None = None  # of the last checkpoint published
        self._progress: Throttle[str, dict[str, Any]] = Throttle(settings.progress_interval_s)
        self._progress_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._acked_seqs: list[int] = []
        self._ack_ready = asyncio.Event()
        self._in_flight = 0
        self._window_open = asyncio.Event()
        self._window_open.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._published = 0
        self._acked = 0
        self._reconnects = 0
        self._outbox_stats = outbox.OutboxStats(0, None, 0)

    # --- the public surface ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._online and self._transport is not None and self._transport.connected

    @property
    def stats(self) -> ReporterStats:
        o = self._outbox_stats
        age = None if o.oldest_created_at is None else max(0.0, self._clock() - o.oldest_created_at)
        return ReporterStats(self.connected, self._bd_seq, self._published, self._acked,
                             self._in_flight, self._reconnects, o.dropped, o.depth, age)

    def notify_outbox(self) -> None:
        """Wake the drainer after new rows were committed (callable from any thread)."""
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    def set_recorder_state(self, serial: str, state: Mapping[str, object]) -> None:
        """Retained birth / update of a docked recorder (republished after every reconnect)."""
        self._recorders[serial] = dict(state)
        self._deaths.pop(serial, None)
        self._publish_birth(serial)

    def remove_recorder(self, serial: str) -> None:
        """Retained death (docked: false) of a recorder that left its bay."""
        pending = self._progress.flush(serial)
        if pending is not None:
            self._publish_progress(serial, pending)
        self._recorders.pop(serial, None)
        self._deaths[serial] = self._clock()
        self._publish_death(serial)

    def set_dock_health(self, health: Mapping[str, object]) -> None:
        """New dock health sample: published retained (with outbox and link statistics) and
        kept in the durable outbox as an `events/health` event, so the central side gets
        the history of a broker outage too (droppable, bounded by the outbox policy)."""
        self._health = dict(health)
        if self._settings.enabled:
            self._spawn(self._enqueue_health(self._health))
        if self.connected:
            self._spawn(self._publish_health())

    async def _enqueue_health(self, sample: Mapping[str, Any]) -> None:
        now = self._clock()

        def tx(conn: Any) -> None:
            body = payloads.health_event(now, sample, outbox.stats(conn))
            outbox.enqueue(conn, stream="health", payload=body, droppable=True, now=now)

        try:
            await self._db.write(tx)
        except Exception:  # a health sample must never take reporting down
            log.exception("could not keep a health sample in the outbox")
            return
        self.notify_outbox()

    def offload_progress(self, serial: str, progress: Mapping[str, object]) -> None:
        """Offload progress, throttled to one message per `progress_interval_s` per recorder;
        the latest value is always sent. It is also kept in the recorder's state."""
        value = dict(progress)
        if serial in self._recorders:
            self._recorders[serial]["offload"] = value
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._progress.offer(serial, value, now) is not None:
            self._publish_progress(serial, value)
        elif self._progress_timer is None:
            due = self._progress.next_due()
            if due is not None:
                self._progress_timer = loop.call_at(due, self._progress_tick)

    def checkpoint_signed(self) -> None:
        """A ledger checkpoint was signed: publish the newest one (retained)."""
        if self.connected:
            self._spawn(self._publish_checkpoint(only_new=True))

    async def publish_checkpoint(self) -> None:
        """Publish the newest checkpoint and wait for the broker to take it (clean stop:
        the central side then holds a signature over the dock's very last entry)."""
        transport = self._transport
        if not self.connected or transport is None:
            return
        cps = await self._db.read(lambda c: recent_checkpoints(c, PREVIOUS_CHECKPOINTS + 1))
        if cps:
            self._checkpoint_seq = cps[-1].seq
            await transport.publish(self._topics.checkpoint,
                                    payloads.encode(checkpoint_payload(self._dock_id, cps)),
                                    retain=True)
    def offload_finished(self, serial: str, progress: Mapping[str, object],
                         result: Mapping[str, object]) -> None:
        """The final progress message of an offload (phase finished, with its result); a
        progress update still parked by the throttle is superseded by it."""
        self._progress.flush(serial)
        value = dict(progress)
        if serial in self._recorders:
            self._recorders[serial]["offload"] = value
        self._publish_progress(serial, value, result)

    async def resend(self, first: int, last: int) -> dict[str, Any]:
        """Gap repair: publish again the events with seq in [first, last] that the broker
        already acknowledged (same event_id and seq as the first time). Ledger events are
        read back from the ledger; health samples from the sent history."""
        if last < first:
            raise CommandRejected(f"to_seq {last} is before from_seq {first}")
        if last - first >= MAX_RESEND:
            raise CommandRejected(f"at most {MAX_RESEND} events per resend request")
        transport = self._transport
        if not self.connected or transport is None:
            raise CommandRejected("not connected")

        def read(conn: Any) -> tuple[list[outbox.OutboxEvent], list[int], int]:
            top = outbox.last_seq(conn)
            waiting = outbox.waiting_between(conn, first, last)
            events = []
            for sent in outbox.sent_between(conn, first, last):
                body: dict[str, object] | None = sent.payload
                if sent.ledger_seq is not None:
                    entry = ledger_entry(conn, sent.ledger_seq)
                    body = None if entry is None else entry.as_event()
                if body is not None:
                    events.append(outbox.OutboxEvent(sent.seq, sent.event_id, sent.stream,
                                                     sent.subject, body, False,
                                                     sent.created_at))
            return events, waiting, top

        events, waiting, top = await self._db.read(read)
        futures = []
        for ev in events:
            try:
                topic = self._topics.event(ev.stream)
            except TopicError:
                continue
            futures.append(transport.publish(
                topic, payloads.encode(payloads.event(self._dock_id, ev))))
        if futures:  # the events reach the broker before the reply does
            await asyncio.gather(*futures)
        resent = [ev.seq for ev in events]
        known = set(resent) | set(waiting)
        log.info("resend %d..%d: %d re-sent, %d still waiting", first, last, len(resent),
                 len(waiting))
        return {
            "from_seq": first, "to_seq": last, "resent": resent, "pending": waiting,
            "unavailable": [q for q in range(first, min(last, top) + 1) if q not in known],
            "unknown": list(range(max(first, top + 1), last + 1)),
        }

    async def republish(self) -> None:
        """Republish every retained state message (after connect, and on `rebirth`)."""
        if not self.connected:
            return
        await self._publish_health()
        await self._publish_checkpoint()
        for serial in list(self._recorders):
            self._publish_birth(serial)
        for serial in list(self._deaths):
            self._publish_death(serial)

    async def run(self) -> None:
        """Until cancelled: connect with backoff, birth, drain, commands; then go offline."""
        self._loop = asyncio.get_running_loop()
        if not self._settings.enabled:
            log.info("mqtt disabled: only the outbox bounds policy runs")
            await self._bounds_loop()
            return
        backoff = Backoff(self._settings.backoff_min_s, self._settings.backoff_max_s)
        bounds = asyncio.create_task(self._bounds_loop())
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._session()
                except (MqttError, OSError, DatabaseFull) as exc:
                    # a full disk (even past the database's reserve) pauses reporting: the
                    # outbox keeps every event, and the next session sends them
                    log.warning("mqtt session ended: %s", exc)
                except ExceptionGroup as group:
                    if group.split((MqttError, OSError, DatabaseFull))[1] is not None:
                        log.exception("mqtt session failed")
                    else:
                        log.warning("mqtt session ended: %s", group.exceptions[0])
                # (on cancellation we skip this: _shutdown still says offline first)
                self._online = False
                await self._end_session()
                if time.monotonic() - started > GOOD_SESSION_S:
                    backoff.reset()
                self._reconnects += 1
                await asyncio.sleep(backoff.next_delay())
        finally:
            bounds.cancel()
            await asyncio.shield(self._shutdown())

    # --- sessions ----------------------------------------------------------------------

    async def _session(self) -> None:
        bd_seq = await self._db.write(lambda c: outbox.add_to_counter(c, BDSEQ_COUNTER, 1))
        will = Will(
            self._topics.status,
            payloads.encode(payloads.status_offline(self._dock_id, bd_seq, "connection-lost",
                                                    None)),
        )
        transport = self._factory()
        self._transport = transport
        self._bd_seq = bd_seq
        await transport.connect(will)
        await transport.subscribe(self._topics.command_filter, qos=1)
        await transport.publish(
            self._topics.status,
            payloads.encode(payloads.status_online(self._dock_id, bd_seq, self._clock(),
                                                   self._version, self._settings.protocol)),
            retain=True,
        )
        self._online = True
        log.info("mqtt online (bdSeq %d)", bd_seq)
        await self.republish()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._drain(transport))
            tg.create_task(self._commit_acks())
            tg.create_task(self._read_commands(transport))

    async def _end_session(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._flush_acks()
        self._in_flight = 0
        self._window_open.set()
        transport = self._transport
        if transport is not None and transport.connected:
            with contextlib.suppress(Exception):
                await transport.disconnect()

    async def _shutdown(self) -> None:
        transport = self._transport
        for task in list(self._tasks):
            task.cancel()
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        try:
            if transport is not None and transport.connected:
                await self._publish_stale(transport)
                offline = payloads.status_offline(self._dock_id, self._bd_seq, "shutdown",
                                                  self._clock())
                with contextlib.suppress(MqttError, TimeoutError):
                    await asyncio.wait_for(
                        transport.publish(self._topics.status, payloads.encode(offline),
                                          retain=True), 5.0)
                await self._flush_acks()
                await transport.disconnect()
            else:
                await self._flush_acks()
        finally:
            self._online = False

    async def _publish_stale(self, transport: Transport) -> None:
        """Clean stop: every docked recorder's retained state says it is no longer vouched
        for (`stale: true`), so nobody reads a stopped dock's last word as current."""
        now = self._clock()
        futures = []
        for serial, state in self._recorders.items():
            try:
                topic = self._topics.recorder_state(serial)
            except TopicError:
                continue
            body = payloads.recorder_birth(self._dock_id, serial, self._bd_seq, now, state,
                                           stale=True)
            futures.append(transport.publish(topic, payloads.encode(body), retain=True))
        if futures:
            with contextlib.suppress(MqttError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*futures), 5.0)

    # --- the outbox drain --------------------------------------------------------------

    async def _drain(self, transport: Transport) -> None:
        after = 0
        while True:
            await self._window_open.wait()
            self._wake.clear()
            if not transport.connected:
                raise ConnectionLost("connection closed")
            room = min(self._batch, self._window - self._in_flight)
            if room <= 0:
                self._window_open.clear()
                continue
            rows = await self._db.read(functools.partial(outbox.peek, limit=room, after_seq=after))
            if not rows:
                self._outbox_stats = await self._db.read(outbox.stats)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), BOUNDS_INTERVAL_S)
                continue
            for ev in rows:
                try:
                    topic = self._topics.event(ev.stream)
                except TopicError:
                    topic = self._topics.event("other")
                fut = transport.publish(topic, payloads.encode(payloads.event(self._dock_id, ev)))
                self._published += 1
                self._in_flight += 1
                fut.add_done_callback(functools.partial(self._on_event_done, ev.seq))
                after = ev.seq
            if self._in_flight >= self._window:
                self._window_open.clear()

    def _on_event_done(self, seq: int, fut: asyncio.Future[None]) -> None:
        self._in_flight = max(0, self._in_flight - 1)
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
            transport = self._transport
            if isinstance(transport, PahoTransport):
                transport.abort()

    async def _commit_acks(self) -> None:
        while True:
            await self._ack_ready.wait()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        self._ack_ready.clear()
        seqs, self._acked_seqs = self._acked_seqs, []
        if seqs:
            now = self._clock()
            await self._db.write(lambda c: outbox.ack(c, seqs, now))
            self._acked += len(seqs)
            o = self._outbox_stats
            self._outbox_stats = dataclasses.replace(o, depth=max(0, o.depth - len(seqs)))

    async def _bounds_loop(self) -> None:
        while True:
            try:
                dropped = await self.enforce_bounds_now()
                if dropped:
                    log.warning("outbox bounds: dropped %d health samples", dropped)
                self._outbox_stats = await self._db.read(outbox.stats)
                if self.connected:  # periodic health: fresh outbox depth and dropped count
                    await self._publish_health()
            except Exception:
                log.exception("outbox bounds pass failed")
            await asyncio.sleep(BOUNDS_INTERVAL_S)

    async def enforce_bounds_now(self) -> int:
        """Run the bounds policy at once (also runs every minute); returns rows dropped."""
        s = self._settings
        now = self._clock()

        def tx(c: Any) -> int:
            outbox.prune_sent(c, max_age_days=s.outbox_history_days, now=now)
            return outbox.enforce_bounds(c, max_events=s.outbox_max_events,
                                         max_age_days=s.outbox_max_age_days, now=now)

        dropped = await self._db.write(tx)
        self._outbox_stats = await self._db.read(outbox.stats)
        return dropped

    # --- commands ----------------------------------------------------------------------

    async def _read_commands(self, transport: Transport) -> None:
        while True:
            msg = await transport.next_message()
            if not msg.topic.startswith(self._topics.command_prefix):
                log.warning("ignoring message on unexpected topic %r", msg.topic[:200])
                continue
            if msg.retain:
                # A retained command is delivered again on every (re)subscribe: acting on it
                # would repeat it. Commands count only when sent live.
                log.warning("ignoring retained command on %r (%d bytes): commands are carried"
                            " out only when sent live, not retained", msg.topic[:200],
                            len(msg.payload))
                continue
            self._spawn(self._answer(transport, msg))

    async def _answer(self, transport: Transport, msg: Message) -> None:
        name = msg.topic[len(self._topics.command_prefix):]
        route = reply_route(self._topics, name, msg.response_topic, msg.correlation_data)
        try:
            reply = await self._commands.handle(name, msg.payload, refuse=route.problem)
        except Exception:
            log.exception("command on %r not answered", msg.topic[:200])
            return
        try:
            await transport.publish(route.topic, reply, correlation_data=route.correlation_data)
        except (MqttError, ValueError) as exc:
            log.warning("reply to the command on %r not sent: %s", msg.topic[:200], exc)

    # --- retained state ----------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retain(self, topic: Callable[[], str], body: Mapping[str, Any],
                on_ack: Callable[[], None] | None = None) -> None:
        transport = self._transport
        if not self.connected or transport is None:
            return
        try:
            name = topic()
        except TopicError as exc:  # e.g. a serial with "/" in it: never a crash of the caller
            log.warning("not publishing state: %s", exc)
            return
        fut = transport.publish(name, payloads.encode(body), retain=True)

        def done(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None and on_ack is not None:
                on_ack()

        fut.add_done_callback(done)

    def _publish_birth(self, serial: str) -> None:
        state = self._recorders.get(serial)
        if state is None:
            return
        body = payloads.recorder_birth(self._dock_id, serial, self._bd_seq, self._clock(), state)
        self._retain(functools.partial(self._topics.recorder_state, serial), body)

    def _publish_death(self, serial: str) -> None:
        when = self._deaths.get(serial)
        if when is None:
            return
        body = payloads.recorder_death(self._dock_id, serial, self._bd_seq, when)

        def acked() -> None:
            if self._deaths.get(serial) == when:
                del self._deaths[serial]

        self._retain(functools.partial(self._topics.recorder_state, serial), body, acked)

    async def _publish_health(self) -> None:
        self._outbox_stats = await self._db.read(outbox.stats)
        if not self._health:
            return  # no sample yet: the first one is published when it is taken
        mqtt = {"published": self._published, "acked": self._acked,
                "in_flight": self._in_flight, "reconnects": self._reconnects}
        body = payloads.health(self._dock_id, self._bd_seq, self._clock(), self._version,
                               self._health, self._outbox_stats, mqtt)
        self._retain(lambda: self._topics.health, body)

    async def _publish_checkpoint(self, *, only_new: bool = False) -> None:
        try:
            cps = await self._db.read(lambda c: recent_checkpoints(c, PREVIOUS_CHECKPOINTS + 1))
        except sqlite3.Error as exc:  # a database without a ledger (reporter-only tests)
            log.warning("no ledger checkpoint to publish: %s", exc)
            return
        if not cps or (only_new and cps[-1].seq == self._checkpoint_seq):
            return
        self._checkpoint_seq = cps[-1].seq
        self._retain(lambda: self._topics.checkpoint, checkpoint_payload(self._dock_id, cps))

    def _publish_progress(self, serial: str, value: Mapping[str, Any],
                          result: Mapping[str, Any] | None = None) -> None:
        transport = self._transport
        if not self.connected or transport is None:
            return
        body = payloads.progress(self._dock_id, serial, self._clock(), value, result)
        try:
            topic = self._topics.recorder_progress(serial)
        except TopicError as exc:
            log.warning("not publishing progress: %s", exc)
            return
        fut = transport.publish(topic, payloads.encode(body), qos=0)
        fut.add_done_callback(_consume)

    def _progress_tick(self) -> None:
        self._progress_timer = None
        loop = asyncio.get_running_loop()
        for serial, value in self._progress.take_due(loop.time()):
            self._publish_progress(serial, value)
        due = self._progress.next_due()
        if due is not None:
            self._progress_timer = loop.call_at(due, self._progress_tick)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
