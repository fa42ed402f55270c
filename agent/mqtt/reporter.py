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
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from agent.mqtt import payloads
from agent.mqtt.backoff import Backoff
from agent.mqtt.command_inbox import read_commands
from agent.mqtt.command_processor import CommandActions, CommandProcessor
from agent.mqtt.drain import BOUNDS_INTERVAL_S, OutboxDrain
from agent.mqtt.errors import MqttError
from agent.mqtt.resend import MAX_RESEND, resend_events
from agent.mqtt.retained import RetainedState
from agent.mqtt.topics import Topics
from agent.mqtt.transport import PahoTransport, Transport, Will
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database, DatabaseFull

log = logging.getLogger(__name__)

BDSEQ_COUNTER = "bdseq"
GOOD_SESSION_S = 30.0  # a session this long resets the reconnect backoff

__all__ = ["BOUNDS_INTERVAL_S", "MAX_RESEND", "Reporter", "ReporterStats"]


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
        self._retained = RetainedState(
            db, self._topics, agent_version=agent_version,
            progress_interval_s=settings.progress_interval_s, link=self._link,
            bd_seq=lambda: self._bd_seq, clock=clock)
        self._outbox = OutboxDrain(db, settings, self._topics, window=window, batch=batch,
                                   clock=clock, on_rejected=self._abort_link)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnects = 0

    # --- the public surface ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._online and self._transport is not None and self._transport.connected

    @property
    def stats(self) -> ReporterStats:
        d = self._outbox
        o = d.outbox_stats
        age = None if o.oldest_created_at is None else max(0.0, self._clock() - o.oldest_created_at)
        return ReporterStats(self.connected, self._bd_seq, d.published, d.acked,
                             d.in_flight, self._reconnects, o.dropped, o.depth, age)

    def notify_outbox(self) -> None:
        """Wake the drainer after new rows were committed (callable from any thread)."""
        loop = self._loop
        if loop is not None and not _on_loop(loop):
            loop.call_soon_threadsafe(self._outbox.wake.set)
        else:
            self._outbox.wake.set()

    def set_recorder_state(self, serial: str, state: Mapping[str, object]) -> None:
        """Retained birth / update of a docked recorder (republished after every reconnect)."""
        self._retained.set_recorder(serial, state)

    def remove_recorder(self, serial: str) -> None:
        """Retained death (docked: false) of a recorder that left its bay."""
        self._retained.remove_recorder(serial)

    def freeze_states(self) -> None:
        """Dock stopping: states stay as they are and go `stale`; the sessions the stop ends
        are no undocking (their recorders are still in the bays)."""
        self._retained.stop()

    def set_dock_health(self, health: Mapping[str, object]) -> None:
        """New dock health sample: published retained (with outbox and link statistics) and
        kept in the outbox as a droppable `events/health` event (history across outages)."""
        self._retained.health = dict(health)
        if self._settings.enabled:
            self._spawn(self._keep_health(self._retained.health))
        if self.connected:
            self._spawn(self._publish_health())

    def offload_progress(self, serial: str, progress: Mapping[str, object]) -> None:
        """Offload progress (throttled per recorder; the latest is always sent, and kept in
        the recorder's state)."""
        self._retained.offload_progress(serial, progress)

    def offload_finished(self, serial: str, progress: Mapping[str, object],
                         result: Mapping[str, object]) -> None:
        """An offload's final progress (with its result); supersedes a parked update."""
        self._retained.offload_finished(serial, progress, result)

    def checkpoint_signed(self) -> None:
        """A ledger checkpoint was signed: publish the newest one (retained)."""
        if self.connected:
            self._spawn(self._retained.publish_checkpoint(only_new=True))

    async def publish_checkpoint(self) -> None:
        """The newest checkpoint, once the broker took it (clean stop: a signature over
        the very last entry)."""
        if (transport := self._link()) is not None:
            await self._retained.publish_checkpoint_now(transport)

    async def resend(self, first: int, last: int) -> dict[str, Any]:
        """Gap repair: publish again events the broker already acknowledged (resend.py)."""
        return await resend_events(self._db, self._link(), self._topics, first, last)

    async def republish(self) -> None:
        """Republish every retained state message (after connect, and on `rebirth`)."""
        if self.connected:
            await self._publish_health()
            await self._retained.republish()

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
                await self._one_session()
                # (on cancellation we skip this: _shutdown still says offline first)
                self._online = False
                await self._end_session()
                if time.monotonic() - started > GOOD_SESSION_S:
                    backoff.reset()
                self._reconnects += 1
                await asyncio.sleep(backoff.next_delay())
        finally:
            self.freeze_states()  # (the agent does so first, before stopping the sessions)
            bounds.cancel()
            await asyncio.shield(self._shutdown())

    # --- sessions ----------------------------------------------------------------------

    def _link(self) -> Transport | None:
        return self._transport if self.connected else None

    def _abort_link(self) -> None:
        if isinstance(self._transport, PahoTransport):
            self._transport.abort()

    def _mqtt_stats(self) -> dict[str, int]:
        d = self._outbox
        return {"published": d.published, "acked": d.acked, "in_flight": d.in_flight,
                "reconnects": self._reconnects}

    async def _keep_health(self, sample: Mapping[str, object]) -> None:
        if await self._outbox.enqueue_health(sample):
            self.notify_outbox()

    async def _publish_health(self) -> None:
        self._outbox.outbox_stats = await self._db.read(outbox.stats)
        self._retained.publish_health(self._mqtt_stats(), self._outbox.outbox_stats)

    async def _one_session(self) -> None:
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
            tg.create_task(self._outbox.drain(transport))
            tg.create_task(self._outbox.commit_acks())
            tg.create_task(read_commands(transport, self._topics, self._commands,
                                         self._spawn))

    async def _end_session(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._outbox.flush_acks()
        self._outbox.session_ended()
        transport = self._transport
        if transport is not None and transport.connected:
            with contextlib.suppress(Exception):
                await transport.disconnect()

    async def _shutdown(self) -> None:
        transport = self._transport
        for task in list(self._tasks):
            task.cancel()
        self._retained.stop_timers()
        try:
            if transport is not None and transport.connected:
                await self._retained.publish_stale(transport)
                offline = payloads.status_offline(self._dock_id, self._bd_seq, "shutdown",
                                                  self._clock())
                with contextlib.suppress(MqttError, TimeoutError):
                    async with asyncio.timeout(5.0):
                        await transport.publish(self._topics.status, payloads.encode(offline),
                                                retain=True)
                await self._outbox.flush_acks()
                await transport.disconnect()
            else:
                await self._outbox.flush_acks()
        finally:
            self._online = False

    async def _bounds_loop(self) -> None:
        while True:
            try:
                dropped = await self._outbox.enforce_bounds()
                if dropped:
                    log.warning("outbox bounds: dropped %d health samples", dropped)
                if self.connected:  # periodic health: fresh outbox depth and dropped count
                    await self._publish_health()
            except Exception:
                log.exception("outbox bounds pass failed")
            await asyncio.sleep(BOUNDS_INTERVAL_S)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
