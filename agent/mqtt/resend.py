"""Gap repair: publish again outbox events the broker already acknowledged.

A consumer that missed events (seq gaps) asks with the `resend` command. Ledger events are
read back from the ledger, health samples from the sent history; each goes out with the
same event_id and seq as the first time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from agent.mqtt import payloads
from agent.mqtt.errors import CommandRejected
from agent.mqtt.topics import TopicError, Topics
from agent.mqtt.transport import Transport
from agent.store import outbox
from agent.store.db import Database
from agent.store.ledger import get_entry as ledger_entry

log = logging.getLogger(__name__)

MAX_RESEND = 10_000  # events per resend request


def _read(conn: sqlite3.Connection, first: int, last: int
          ) -> tuple[list[outbox.OutboxEvent], list[int], int]:
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
                                             sent.subject, body, False, sent.created_at))
    return events, waiting, top


async def resend_events(db: Database, transport: Transport | None, topics: Topics,
                        first: int, last: int) -> dict[str, object]:
    """Re-publish seqs [first, last] over `transport` (None: not connected); the reply
    says what was re-sent, what still waits in the outbox, what is no longer available
    and what was never assigned."""
    if last < first:
        raise CommandRejected(f"to_seq {last} is before from_seq {first}")
    if last - first >= MAX_RESEND:
        raise CommandRejected(f"at most {MAX_RESEND} events per resend request")
    if transport is None:
        raise CommandRejected("not connected")
    events, waiting, top = await db.read(lambda c: _read(c, first, last))
    futures = []
    for ev in events:
        try:
            topic = topics.event(ev.stream)
        except TopicError:
            continue
        futures.append(transport.publish(
            topic, payloads.encode(payloads.event(topics.dock_id, ev))))
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
