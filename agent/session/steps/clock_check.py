"""Step `clock`: measure the recorder's drift, set its clock when the dock may, record
before and after; then file the recorder's event log on the now known clock."""

from __future__ import annotations

from dataclasses import replace

from agent.docking_state import ClockFacts, ClockSet
from agent.session.clock import (
    ClockAction,
    ClockError,
    ClockSample,
    decide,
    measure_drift,
    set_target_ms,
    within_tolerance,
)
from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.session.recorder_link import RecorderLink
from agent.session.state_machine import State
from agent.session.steps.field_events import record_field_events
from agent.store.faults import FaultCode as FC


class ClockUnit:
    async def run(self, ctx: SessionContext) -> None:
        await check_clock(ctx, ctx.require_link())
        ctx.advance(State.CLOCK_CHECKED)
        if ctx.carry.field_events is not None:
            await record_field_events(ctx, ctx.carry.field_events)
            ctx.carry.field_events = None  # recorded: not held through the offload


async def _samples(ctx: SessionContext, link: RecorderLink) -> list[ClockSample]:
    out = []
    for _ in range(max(1, ctx.deps.clock_samples)):
        r = await ctx.call("get clock", link.get_clock())
        out.append(ClockSample(
            device_utc_ms=r.device_utc_ms, sent_ms=r.sent_wall * 1000,
            received_ms=r.received_wall * 1000))
    return out


async def check_clock(ctx: SessionContext, link: RecorderLink) -> None:
    cfg = ctx.deps.clock
    try:
        before = measure_drift(await _samples(ctx, link))
    except ClockError as exc:
        raise SessionFailure(FC.CLOCK_NOT_SET, f"recorder clock unreadable: {exc}") from exc
    synced = ctx.deps.dock_synchronised()
    action = decide(before.drift_ms, tolerance_ms=cfg.tolerance_ms,
                              dock_synchronised=synced,
                              require_dock_sync=cfg.require_dock_sync)
    measured = ClockFacts(
        drift_before_ms=before.drift_ms, rtt_ms=before.rtt_ms, samples=before.samples,
        tolerance_ms=cfg.tolerance_ms, dock_synchronised=synced, action=action.value)
    ctx.facts.clock = measured
    if action is not ClockAction.SET:
        await ctx.record("clock_checked", measured.as_record())
        if action is ClockAction.REFUSE_UNSYNCHRONISED:
            await ctx.fault(
                FC.DOCK_CLOCK_UNSYNCHRONISED,
                f"dock clock unsynchronised: recorder drift {before.drift_ms} ms not"
                " corrected", "warning", measured.as_record())
        return
    target = set_target_ms(ctx.deps.wall_time() * 1000, before.rtt_ms / 2)
    set_error: str | None = None
    try:
        await ctx.call("set clock", link.set_clock(target), FC.CLOCK_NOT_SET)
    except SessionFailure as f:
        if not f.detail.get("device_error"):
            raise
        set_error = f.reason
    after = measure_drift(await _samples(ctx, link))
    ok = set_error is None and within_tolerance(after.drift_ms, cfg.tolerance_ms)
    ctx.facts.clock = replace(measured, set=ClockSet(drift_after_ms=after.drift_ms,
                                                     rtt_after_ms=after.rtt_ms, ok=ok,
                                                     error=set_error))
    facts = ctx.facts.clock.as_record()
    await ctx.record("clock_set", facts)
    if ok:
        ctx.facts.done.append("clock set")
    else:
        await ctx.fault(
            FC.CLOCK_NOT_SET,
            f"recorder clock will not set: drift {before.drift_ms} ms before,"
            f" {after.drift_ms} ms after" + (f" ({set_error})" if set_error else ""),
            "error", facts)
