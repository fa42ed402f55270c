"""Step `link`: open the control channel, say hello, authenticate with the fleet secret."""

from __future__ import annotations

import logging

from agent.devices.port_identity import still_belongs
from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.session.state_machine import State
from agent.store.faults import FaultCode as FC

log = logging.getLogger(__name__)


class LinkUnit:
    async def run(self, ctx: SessionContext) -> None:
        assert ctx.tty_path is not None, "a storage-only session has no link step"
        link = await ctx.call("open control channel", ctx.deps.open_link(ctx.tty_path))
        ctx.res.link = link
        # Opened first, checked second: an open node stays with its device, so if the node
        # is still this recorder's now, every answer on it is the recorder's own.
        if ctx.port is not None and not still_belongs(ctx.tty_path, ctx.port):
            log.info("bay %s: port %s of %s now belongs to another device: the recorder is"
                     " gone", ctx.bay, ctx.tty_path, ctx.key)
            raise SessionFailure(
                FC.PROTOCOL_ERROR, f"control port {ctx.tty_path} no longer belongs to this"
                " recorder (another device has it now): the recorder is gone",
                detail={"link_closed": True, "port_reassigned": True})
        hello = await ctx.call("hello", link.hello())
        ctx.carry.protocol_version = hello.protocol_version
        await ctx.call("authenticate", link.authenticate(ctx.deps.fleet_secret))
        ctx.advance(State.AUTHENTICATED)
