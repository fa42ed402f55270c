"""Battery readings (at docking and while charging) and step `battery_poll`."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from agent.docking_state import BatteryFacts
from agent.session.battery import battery_facts
from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.store import recorder_history

log = logging.getLogger("agent.session.runner")

HISTORY_WINDOW_S = 14 * 86400.0  # battery history loaded at docking, for the charge rate
MAX_BATTERY_SAMPLES = 500


class BatteryPollUnit:
    """Released and left docked to charge: read the battery every `battery_poll_s` until
    unplugged (the runner cancels it then); a failed poll is retried at the next."""

    async def run(self, ctx: SessionContext) -> None:
        link = ctx.require_link()
        while True:
            await asyncio.sleep(ctx.deps.battery_poll_s)
            try:
                bat = await ctx.call("battery", link.battery())
            except SessionFailure as f:
                log.warning("bay %s: battery poll failed: %s", ctx.bay, f.reason)
                continue
            await battery_reading(ctx, battery_facts(bat))
            ctx.changed()


async def load_battery_history(ctx: SessionContext) -> None:
    """Earlier samples of this pack (charge-rate ETA from the first reading on)."""
    serial = ctx.require_identity().serial
    since = int((ctx.deps.wall_time() - HISTORY_WINDOW_S) * 1_000_000)
    rows = await ctx.deps.db.read(lambda c: recorder_history.battery_history(
        c, serial, since_us=since, limit=MAX_BATTERY_SAMPLES))
    ctx.facts.battery_samples = [(r.time_us / 1e6, r.percent, r.charging) for r in rows]


async def battery_reading(ctx: SessionContext, facts: BatteryFacts) -> None:
    f = ctx.facts
    f.battery = facts
    f.battery_at = now = ctx.deps.wall_time()
    f.battery_samples.append((now, float(facts.percent), facts.charging))
    del f.battery_samples[:-MAX_BATTERY_SAMPLES]
    serial, session_id = ctx.who()[0], ctx.session_id

    def tx(conn: sqlite3.Connection) -> bool:
        return recorder_history.record_battery(conn, serial, facts.as_record(),
                                               time_us=int(now * 1_000_000),
                                               session_id=session_id)

    try:
        await asyncio.shield(ctx.deps.db.write(tx))
    except Exception:  # history is for trends: never let it stop the docking
        log.exception("bay %s: battery sample not stored", ctx.bay)
