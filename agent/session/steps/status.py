"""Step `status`: the recorder's battery (with this pack's history) and storage status."""

from __future__ import annotations

from agent.docking_state import StorageFacts
from agent.session.battery import battery_facts, battery_problems
from agent.session.context import SessionContext
from agent.session.state_machine import State
from agent.session.steps.battery_poll import battery_reading, load_battery_history
from agent.store.faults import FaultCode as FC


class StatusUnit:
    async def run(self, ctx: SessionContext) -> None:
        link = ctx.require_link()
        await load_battery_history(ctx)
        bat = await ctx.call("battery", link.battery())
        await battery_reading(ctx, battery_facts(bat))
        sto = await ctx.call("storage", link.storage(), FC.STORAGE_ERROR)
        ctx.facts.storage = StorageFacts(total_bytes=sto.total_bytes, free_bytes=sto.free_bytes,
                                         file_count=sto.file_count, recording=sto.recording)
        ctx.changed()
        problems = battery_problems(bat)
        if problems:  # reported, not fatal: the footage must still come off
            battery = ctx.facts.battery
            await ctx.fault(FC.BATTERY_FAILED, "; ".join(problems), "warning",
                            {"battery": battery.as_record() if battery else None})
        ctx.advance(State.STATUS_READ)
