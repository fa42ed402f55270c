"""Step `release`: lock the recorder's storage again (it records and charges), write an
officer assignment that waited for this docking's footage to be off."""

from __future__ import annotations

from agent.session.context import SessionContext
from agent.session.state_machine import State
from agent.session.steps.assignment import apply_pending_assignment
from agent.session.steps.offload import MASS_STORAGE_TIMEOUT_S
from agent.store.faults import FaultCode as FC


class ReleaseUnit:
    async def run(self, ctx: SessionContext) -> None:
        if not ctx.storage_only:
            link = ctx.require_link()
            await ctx.call("lock storage", link.set_mass_storage(False), FC.STORAGE_ERROR,
                           floor=MASS_STORAGE_TIMEOUT_S)
            ctx.res.unlocked = False
            ctx.facts.done.append("storage locked")
            ctx.carry.footage_settled = True
            await apply_pending_assignment(ctx)
        ctx.advance(State.RELEASED)
