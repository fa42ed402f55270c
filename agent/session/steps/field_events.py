"""The recorder's own event log: read at identification, filed once the clock is known."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.session.fieldlog import continues, docked_periods, entry_mark, plan, record
from agent.session.recorder_link import RecorderLink
from agent.store import recorder_history
from agent.store.faults import FaultCode as FC
from firmware_bridge.messages import DeviceLogEvent

log = logging.getLogger("agent.session.runner")

EVENT_LOG_CHUNK = 256  # entries per bounded read of the recorder's event log
EVENT_LOG_MAX = 4096  # per docking; the next docking reads on from there
EVENT_LOG_FLOOR_S = 30.0  # per chunk: a full page set at 115200 baud fits easily


async def fetch_event_log(ctx: SessionContext, link: RecorderLink
                          ) -> list[DeviceLogEvent] | None:
    """New entries of the recorder's event log; None if it cannot be read now (the
    cursor stays, so they are read at the next docking)."""
    serial = ctx.require_identity().serial
    cursor = await ctx.deps.db.read(lambda c: recorder_history.event_cursor(c, serial))
    # who held it when the log was read, before any assignment made at this docking
    ctx.carry.field_officer = ctx.require_identity().officer_no or None
    try:
        # one entry early: the last one read before must still be there, unchanged
        since = max(0, cursor.next_index - 1) if cursor else 0
        events = await _read_event_log(ctx, link, since)
        if not continues(cursor, events):
            assert cursor is not None
            await ctx.records.past_fault(
                FC.PROTOCOL_ERROR, "the recorder's event log does not continue where it"
                " was last read (reset or replaced): read again from the start",
                recorder=serial, officer=ctx.carry.field_officer, severity="warning",
                detail={"expected_index": cursor.next_index - 1,
                        "expected_entry": cursor.last_entry,
                        "found": entry_mark(events[0]) if events else None})
            cursor = recorder_history.EventCursor(0, cursor.officer, None)
            events = await _read_event_log(ctx, link, 0)
    except SessionFailure as f:
        if f.detail.get("link_closed"):
            raise
        log.warning("bay %s: recorder event log not read: %s", ctx.bay, f.reason)
        return None
    ctx.carry.event_cursor = cursor
    return events


async def _read_event_log(ctx: SessionContext, link: RecorderLink,
                          since: int) -> list[DeviceLogEvent]:
    """Up to EVENT_LOG_MAX entries from `since`, in bounded chunks, so a long log (or a
    slow link) neither stalls the docking nor keeps it from ever being read: each
    docking reads on from where the last one stopped. A failure after some chunks keeps
    what was read (the cursor moves only that far)."""
    out: list[DeviceLogEvent] = []
    while len(out) < EVENT_LOG_MAX:
        try:
            chunk = list(await ctx.call("event log", link.event_log(since, EVENT_LOG_CHUNK),
                                        floor=EVENT_LOG_FLOOR_S))
        except SessionFailure as f:
            if not out or f.detail.get("link_closed"):
                raise
            log.warning("bay %s: recorder event log read in part: %s", ctx.bay, f.reason)
            break
        out.extend(chunk)
        if len(chunk) < EVENT_LOG_CHUNK:
            break
        since = chunk[-1].index + 1
    return out


async def record_field_events(ctx: SessionContext, events: list[DeviceLogEvent]) -> None:
    serial, officer = ctx.require_identity().serial, ctx.carry.field_officer
    drift = ctx.facts.clock.drift_before_ms if ctx.facts.clock is not None else None
    now_us = int(ctx.deps.wall_time() * 1_000_000)
    here = (int(ctx.docked_at * 1_000_000) - 10_000_000, None)
    ledger, bay, session_id, cursor = (ctx.deps.ledger, ctx.bay, ctx.session_id,
                                       ctx.carry.event_cursor)

    def tx(conn: sqlite3.Connection) -> int:
        periods = [here, *docked_periods(conn, serial, exclude_session=session_id)]
        p = plan(events, cursor=cursor, current_officer=officer, drift_ms=drift,
                          now_us=now_us, docked_periods=periods)
        return len(record(conn, ledger, p, serial=serial, bay=bay,
                                   session_id=session_id, now_us=now_us))

    n = await asyncio.shield(ctx.deps.db.write(tx))
    if n:
        log.info("bay %s: %d fault(s) from the recorder's event log", ctx.bay, n)
