"""The dock's retained MQTT state: recorder births and deaths, health, the latest ledger
checkpoint, and (not retained, throttled) offload progress.

What is published is also remembered, so every reconnect can republish it all (Sparkplug
rebirth). A death stays remembered until the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from agent.mqtt import payloads
from agent.mqtt.checkpoints import PREVIOUS as PREVIOUS_CHECKPOINTS
from agent.mqtt.checkpoints import checkpoint_payload
from agent.mqtt.errors import MqttError
from agent.mqtt.throttle import Throttle
from agent.mqtt.topics import TopicError, Topics
from agent.mqtt.transport import Transport
from agent.store import outbox
from agent.store.db import Database
from agent.store.ledger import recent_checkpoints

log = logging.getLogger(__name__)

STALE_PUBLISH_TIMEOUT_S = 5.0


class RetainedState:
    def __init__(self, db: Database, topics: Topics, *, agent_version: str,
                 progress_interval_s: float, link: Callable[[], Transport | None],
                 bd_seq: Callable[[], int], clock: Callable[[], float]) -> None:
        """`link` gives the transport while the dock is online, else None."""
        self._db = db
        self._topics = topics
        self._dock_id = topics.dock_id
        self._version = agent_version
        self._link = link
        self._bd_seq = bd_seq
        self._clock = clock
        self._recorders: dict[str, dict[str, Any]] = {}
        self._deaths: dict[str, float] = {}  # serial -> undock time, until acknowledged
        self.health: dict[str, Any] = {}
        self._checkpoint_seq: int | None = None  # of the last checkpoint published
        self._progress: Throttle[str, dict[str, Any]] = Throttle(progress_interval_s)
        self._progress_timer: asyncio.TimerHandle | None = None
        self._copying: set[str] = set()  # recorders whose offload has copied its first bytes
        self._stopping = False

    # --- recorders -----------------------------------------------------------------------

    def stop(self) -> None:
        """The dock is stopping: its recorders' last word is `stale` (publish_stale). A
        session the stop itself ends is no undocking, and nothing is born any more."""
        self._stopping = True

    def set_recorder(self, serial: str, state: Mapping[str, object]) -> None:
        if self._stopping:
            return  # what the stop does to a session is no news: its last state goes stale
        new, old = dict(state), self._recorders.get(serial)
        if (old is not None and "offload" in old and "offload" not in new
                and old.get("docked_at") == new.get("docked_at")):
            new["offload"] = old["offload"]  # this docking's latest progress stays in it
        self._recorders[serial] = new
        self._deaths.pop(serial, None)
        self._publish_birth(serial)

    def remove_recorder(self, serial: str) -> None:
        if self._stopping:
            return  # still in its bay: published stale, never dead
        self._copying.discard(serial)
        pending = self._progress.flush(serial)
        if pending is not None:
            self._publish_progress(serial, pending)
        self._recorders.pop(serial, None)
        self._deaths[serial] = self._clock()
        self._publish_death(serial)

    def offload_progress(self, serial: str, progress: Mapping[str, object]) -> None:
        value = dict(progress)
        if serial in self._recorders:
            self._recorders[serial]["offload"] = value
        # The first bytes copied are a milestone (the offload really runs): never parked.
        first_bytes = _bytes_done(value) > 0 and serial not in self._copying
        if first_bytes:
            self._copying.add(serial)
        loop = asyncio.get_running_loop()
        if self._progress.offer(serial, value, loop.time(), urgent=first_bytes) is not None:
            self._publish_progress(serial, value)
        elif self._progress_timer is None:
            due = self._progress.next_due()
            if due is not None:
                self._progress_timer = loop.call_at(due, self._progress_tick)

    def offload_finished(self, serial: str, progress: Mapping[str, object],
                         result: Mapping[str, object]) -> None:
        self._copying.discard(serial)
        self._progress.flush(serial)
        value = dict(progress)
        if serial in self._recorders:
            self._recorders[serial]["offload"] = value
        self._publish_progress(serial, value, result)

    def stop_timers(self) -> None:
        if self._progress_timer is not None:
            self._progress_timer.cancel()

    # --- republishing --------------------------------------------------------------------

    async def republish(self) -> None:
        """Every retained recorder state and the checkpoint again (health: the caller)."""
        await self.publish_checkpoint()
        for serial in list(self._recorders):
            self._publish_birth(serial)
        for serial in list(self._deaths):
            self._publish_death(serial)

    def publish_health(self, mqtt_stats: Mapping[str, int],
                       outbox_stats: outbox.OutboxStats) -> None:
        if not self.health:
            return  # no sample yet: the first one is published when it is taken
        body = payloads.health(self._dock_id, self._bd_seq(), self._clock(), self._version,
                               self.health, outbox_stats, dict(mqtt_stats))
        self._retain(lambda: self._topics.health, body)

    async def publish_checkpoint(self, *, only_new: bool = False) -> None:
        try:
            cps = await self._db.read(lambda c: recent_checkpoints(c, PREVIOUS_CHECKPOINTS + 1))
        except sqlite3.Error as exc:  # a database without a ledger (reporter-only tests)
            log.warning("no ledger checkpoint to publish: %s", exc)
            return
        if not cps or (only_new and cps[-1].seq == self._checkpoint_seq):
            return
        self._checkpoint_seq = cps[-1].seq
        self._retain(lambda: self._topics.checkpoint, checkpoint_payload(self._dock_id, cps))

    async def publish_checkpoint_now(self, transport: Transport) -> None:
        """The newest checkpoint, waiting for the broker to take it (clean stop)."""
        cps = await self._db.read(lambda c: recent_checkpoints(c, PREVIOUS_CHECKPOINTS + 1))
        if cps:
            self._checkpoint_seq = cps[-1].seq
            await transport.publish(self._topics.checkpoint,
                                    payloads.encode(checkpoint_payload(self._dock_id, cps)),
                                    retain=True)

    async def publish_stale(self, transport: Transport) -> None:
        """Clean stop: every docked recorder's retained state says it is no longer vouched
        for (`stale: true`), so nobody reads a stopped dock's last word as current."""
        now = self._clock()
        futures = []
        for serial, state in self._recorders.items():
            try:
                topic = self._topics.recorder_state(serial)
            except TopicError:
                continue
            body = payloads.recorder_birth(self._dock_id, serial, self._bd_seq(), now, state,
                                           stale=True)
            futures.append(transport.publish(topic, payloads.encode(body), retain=True))
        if futures:
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(STALE_PUBLISH_TIMEOUT_S):
                    await asyncio.gather(*futures)

    # --- publishing one message ----------------------------------------------------------

    def _retain(self, topic: Callable[[], str], body: Mapping[str, Any],
                on_ack: Callable[[], None] | None = None) -> None:
        transport = self._link()
        if transport is None:
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
        body = payloads.recorder_birth(self._dock_id, serial, self._bd_seq(), self._clock(),
                                       state)
        self._retain(functools.partial(self._topics.recorder_state, serial), body)

    def _publish_death(self, serial: str) -> None:
        when = self._deaths.get(serial)
        if when is None:
            return
        body = payloads.recorder_death(self._dock_id, serial, self._bd_seq(), when)

        def acked() -> None:
            if self._deaths.get(serial) == when:
                del self._deaths[serial]

        self._retain(functools.partial(self._topics.recorder_state, serial), body, acked)

    def _publish_progress(self, serial: str, value: Mapping[str, Any],
                          result: Mapping[str, Any] | None = None) -> None:
        transport = self._link()
        if transport is None:
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


def _bytes_done(progress: Mapping[str, object]) -> int:
    value = progress.get("bytes_done")
    return value if isinstance(value, int) else 0


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
