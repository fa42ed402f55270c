"""Leaving a recorder safe whatever happened: unmounted, storage locked, nothing wiped.

Used on every exit that is not the normal release: a fault, an unplug, the agent
stopping. Each step is best-effort and bounded, so a hung recorder cannot hold its bay."""

from __future__ import annotations

import asyncio
import logging

from agent.session.context import SessionContext
from agent.session.steps.offload import MASS_STORAGE_TIMEOUT_S

log = logging.getLogger("agent.session.runner")


async def make_safe(ctx: SessionContext, *, lazy: bool) -> None:
    """Unmount and lock storage if the session holds them."""
    res, done = ctx.res, ctx.facts.done
    if res.mounted:
        try:
            async with asyncio.timeout(ctx.bound()):
                await ctx.deps.mounter.unmount(ctx.key, lazy=lazy)
            res.mounted = False
            done.append("unmounted" + (" (lazy)" if lazy else ""))
        except Exception:
            log.exception("bay %s: unmount failed", ctx.bay)
            if not lazy:
                await _lazy_unmount(ctx)
    if res.unlocked and res.link is not None and not res.unplugged.is_set():
        try:
            async with asyncio.timeout(ctx.bound(MASS_STORAGE_TIMEOUT_S)):
                await res.link.set_mass_storage(False)
            res.unlocked = False
            done.append("storage locked")
        except Exception as exc:
            log.warning("bay %s: could not lock recorder storage: %s", ctx.bay, exc)


async def _lazy_unmount(ctx: SessionContext) -> None:
    try:
        async with asyncio.timeout(ctx.bound()):
            await ctx.deps.mounter.unmount(ctx.key, lazy=True)
        ctx.res.mounted = False
        ctx.facts.done.append("unmounted (lazy)")
    except Exception:
        log.exception("bay %s: lazy unmount failed too", ctx.bay)
