"""Step `link`: open the control channel, say hello, authenticate with the fleet secret."""

from __future__ import annotations

from agent.session.context import SessionContext
from agent.session.state_machine import State


class LinkUnit:
    async def run(self, ctx: SessionContext) -> None:
        assert ctx.tty_path is not None, "a storage-only session has no link step"
        link = await ctx.call("open control channel", ctx.deps.open_link(ctx.tty_path))
        ctx.res.link = link
        hello = await ctx.call("hello", link.hello())
        ctx.carry.protocol_version = hello.protocol_version
        await ctx.call("authenticate", link.authenticate(ctx.deps.fleet_secret))
        ctx.advance(State.AUTHENTICATED)
