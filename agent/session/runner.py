"""One docking session: a small executor of the plan `SessionMachine` makes.

`DockingSession.run()` is one task per docked recorder. It asks the machine for the next
step and runs that step's unit (agent.session.steps: link, identify, clock, status,
offload, release, the optional firmware update, battery poll) until the plan is done or
a step fails, then stays with the recorder until the supervisor reports it unplugged.

Safety rules this file keeps:
- every protocol call is bounded by a timeout, so a hung recorder only stalls its own bay;
- a failure becomes one fault record and the recorder is left safe: unmounted, storage
  locked, nothing wiped (the offloader wipes only what is durably stored and verified);
- an unplug cancels whatever runs, lazily releases the mount and records `undocked`;
- nothing shared is held across an await: all state here belongs to this session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.devices.events import PortIdentity, StorageAppeared
from agent.docking_state import (
    STORAGE_ONLY_UNCHECKED,
    FaultNote,
    OffloadProgressFacts,
    OffloadResult,
    SessionSnapshot,
)
from agent.domain import RecorderIdentity
from agent.session.context import SessionContext, SessionDeps
from agent.session.errors import SessionFailure
from agent.session.safety import make_safe
from agent.session.state_machine import SessionMachine, State
from agent.session.steps import units
from agent.session.steps.assignment import apply_pending_assignment
from agent.session.steps.identify import judge_firmware
from agent.store.faults import FaultCode as FC

log = logging.getLogger(__name__)


class DockingSession:
    """The life of one recorder in one bay, from plug to unplug."""

    def __init__(self, deps: SessionDeps, *, key: str, bay: str, tty_path: str | None,
                 source: str = "udev", storage_only: bool = False,
                 port: PortIdentity | None = None) -> None:
        self.ctx = SessionContext(deps, key=key, bay=bay, tty_path=tty_path, source=source,
                                  storage_only=storage_only, port=port)
        self._units = units(deps.optional_units)
        self._work: asyncio.Task[None] | None = None
        self._finished = asyncio.Event()

    # --- what others read --------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.ctx.key

    @property
    def bay(self) -> str:
        return self.ctx.bay

    @property
    def session_id(self) -> str:
        return self.ctx.session_id

    @property
    def storage_only(self) -> bool:
        return self.ctx.storage_only

    @property
    def docked_at(self) -> float:
        return self.ctx.docked_at

    @property
    def machine(self) -> SessionMachine:
        return self.ctx.machine

    @property
    def state(self) -> State:
        return self.ctx.machine.state

    @property
    def identity(self) -> RecorderIdentity | None:
        return self.ctx.facts.identity

    @property
    def offload_result(self) -> OffloadResult | None:
        return self.ctx.facts.offload_result

    @property
    def progress(self) -> OffloadProgressFacts | None:
        return self.ctx.facts.progress

    @property
    def faults(self) -> list[FaultNote]:
        return self.ctx.facts.faults

    @property
    def done(self) -> list[str]:
        return self.ctx.facts.done

    @property
    def battery_at(self) -> float | None:
        return self.ctx.facts.battery_at

    @property
    def leaving(self) -> bool:
        """Told it was unplugged (it may still be releasing the recorder)."""
        return self.ctx.res.unplugged.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def snapshot(self) -> SessionSnapshot:
        return self.ctx.snapshot()

    async def apply_pending_assignment(self) -> bool:
        """Write a pending officer assignment now (see steps.assignment); True if written."""
        return await apply_pending_assignment(self.ctx)

    async def firmware_policy_changed(self) -> None:
        """Judge the docked recorder's firmware again by the policy now in force (a central
        set-firmware-policy): the fault is a readiness fact; the docking (an offload, an
        update) goes on untouched."""
        if self.finished or self.leaving or self.storage_only or self.identity is None:
            return  # gone, or not identified yet: identification judges by the new policy
        await judge_firmware(self.ctx)
        self.ctx.changed()

    # --- events from the supervisor ----------------------------------------------------

    def storage_appeared(self, ev: StorageAppeared) -> None:
        res = self.ctx.res
        res.storage_ref = ev.storage
        res.storage_lost = False
        res.storage_event.set()

    def storage_removed(self) -> None:
        res = self.ctx.res
        res.storage_ref = None
        res.storage_event.clear()
        if res.mounted:
            # The offload notices by itself (reads fail: outcome "interrupted"); this only
            # tells the failure path to wait and see whether the recorder was pulled out.
            res.storage_lost = True

    def unplugged(self) -> None:
        self.ctx.res.unplugged.set()
        if self._work is not None:
            self._work.cancel()

    # --- the task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until unplugged; never raises (one bay's trouble must not touch another)."""
        ctx = self.ctx
        try:
            # The recorder is talked to while its docking commits: every later record of
            # the session waits for this one, so the ledger's order is kept.
            docked = ctx.open_record("docked", {
                "key": ctx.key, "tty": ctx.tty_path, "source": ctx.source,
                "storage_only": ctx.storage_only,
            })
            self._work = asyncio.create_task(self._work_then_idle())
            await asyncio.shield(docked)
            # The work may end (released, failed) long before: the recorder stays docked.
            await ctx.res.unplugged.wait()
            await self._stop_work()
            await self._release("unplugged", lazy=True)
        except asyncio.CancelledError:
            # Agent shutdown: the recorder is still in the bay. Leave it unmounted and
            # locked, and close its custody record; the next start docks it anew.
            await self._stop_work()
            try:
                await asyncio.shield(self._release("agent_stopped", lazy=False))
            except Exception:  # e.g. a disk full past the database's reserve: still stop
                log.exception("bay %s: the docking record could not be closed", ctx.bay)
            raise
        except Exception:
            log.exception("session %s in bay %s crashed", ctx.session_id, ctx.bay)
            await self._stop_work()
        finally:
            await self._close_link()
            self._finished.set()
            ctx.changed()

    async def _stop_work(self) -> None:
        work = self._work
        if work is not None and not work.done():
            work.cancel()
            await asyncio.wait({work})  # unlike `await work`, an outer cancel still propagates

    async def _execute_plan(self) -> None:
        machine = self.ctx.machine
        while (step := machine.next_step()) is not None:
            await self._units[step].run(self.ctx)
            machine.completed(step)

    async def _work_then_idle(self) -> None:
        try:
            await self._execute_plan()
        except SessionFailure as f:
            # An offload cut short by vanished storage may be seen before the unplug event.
            result = self.ctx.facts.offload_result
            gone = (f.detail.get("link_closed") or self.ctx.res.storage_lost
                    or (result is not None and result.outcome == "interrupted"))
            if gone and await self._unplug_follows():
                return  # the recorder was pulled out: that is an unplug, not a fault
            await self._fail(f)
        except Exception as exc:  # a bug or an unforeseen error: still one clear fault
            log.exception("session %s failed unexpectedly", self.ctx.session_id)
            await self._fail(SessionFailure(
                FC.PROTOCOL_ERROR, f"internal error: {type(exc).__name__}: {exc}",
                detail={"state": self.state.value}))

    async def _unplug_follows(self) -> bool:
        """After the tty vanished: does the unplug event follow shortly (device removal
        reaches us a moment after the port dies)?"""
        try:
            async with asyncio.timeout(self.ctx.deps.unplug_grace_s):
                await self.ctx.res.unplugged.wait()
        except TimeoutError:
            return False
        return True

    # --- failure and release -----------------------------------------------------------

    async def _fail(self, f: SessionFailure) -> None:
        ctx = self.ctx
        await make_safe(ctx, lazy=False)
        detail = {**f.detail, "state": self.state.value}
        try:
            await ctx.fault(f.code, f.reason, f.severity, detail)
        except Exception:  # e.g. a disk too full even for the database's reserve
            log.exception("bay %s: fault %s could not be recorded", ctx.bay, f.code.value)
        ctx.advance(State.FAILED, f.reason)  # the session ends, whatever the disk says

    async def _release(self, reason: str, *, lazy: bool) -> None:
        """Leave the recorder safe and close the docking with its `undocked` record."""
        ctx = self.ctx
        await make_safe(ctx, lazy=lazy)
        if self.state is State.REMOVED:
            return
        reached = self.state.value
        ctx.advance(State.REMOVED, reason)
        f = ctx.facts
        await ctx.record("undocked", {
            "reason": reason, "state_reached": reached, "done": list(f.done),
            "offload": f.offload_result.as_record() if f.offload_result else None,
            "faults": [n.code for n in f.faults],
            "clock": f.clock.as_record() if f.clock else None,
            "battery": f.battery.as_record() if f.battery else None,
            "unchecked": list(STORAGE_ONLY_UNCHECKED) if ctx.storage_only else [],
        })

    async def _close_link(self) -> None:
        link, self.ctx.res.link = self.ctx.res.link, None
        if link is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.ctx.bound()):
                    await link.close()
