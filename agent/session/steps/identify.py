"""Step `identify`: who the recorder is and whom it is assigned to (and, storage-only,
`identify_usb`: the USB serial is all there is)."""

from __future__ import annotations

from agent.compliance.firmware import firmware_problem
from agent.domain import RecorderIdentity
from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.session.recorder_link import IdentityLike
from agent.session.state_machine import State
from agent.session.steps.field_events import fetch_event_log
from agent.store.faults import FaultCode as FC


class IdentifyUnit:
    async def run(self, ctx: SessionContext) -> None:
        link = ctx.require_link()
        ident = await ctx.call("identity", link.identity())
        if ident.serial != ctx.key:
            refuse_claimed_serial(ctx, ident)
        officer = await ctx.call("get officer", link.get_officer())
        identity = RecorderIdentity(
            serial=ident.serial, model=ident.model, hardware_rev=ident.hardware_rev,
            firmware=ident.firmware,
            officer_no=officer.officer_no if officer else "",
            officer_name=officer.officer_name if officer else "",
            unit_no=officer.unit_no if officer else "",
            unit_name=officer.unit_name if officer else "",
        )
        ctx.facts.identity = identity
        ctx.machine.identify(identity.serial, identity.officer_no or None)
        # The state says what the dock knows as soon as it knows it (as the docking's birth
        # does before its `docked` entry commits): it does not wait for a commit that a
        # busy disk may hold back for hundreds of milliseconds. The custody record is still
        # committed before anything further happens to the recorder.
        ctx.advance(State.IDENTIFIED)
        await ctx.record("identified", {
            "serial": ident.serial, "model": ident.model, "hardware_rev": ident.hardware_rev,
            "firmware": ident.firmware, "officer_no": identity.officer_no,
            "officer_name": identity.officer_name, "unit_no": identity.unit_no,
            "unit_name": identity.unit_name,
            "officer_assigned": bool(identity.officer_no),
            "protocol_version": ctx.carry.protocol_version, "usb_serial": ctx.key,
        })
        await check_identity_policy(ctx)
        # Read before anything here writes to the log (officer, clock), on the field clock.
        ctx.carry.field_events = await fetch_event_log(ctx, link)
        # A pending officer assignment waits until the footage is off: the files on the
        # recorder belong to the officer read just now, not to the next one.


class UsbIdentifyUnit:
    """A storage-only recorder: no control channel, so its USB serial names it."""

    async def run(self, ctx: SessionContext) -> None:
        await ctx.record("identified", {
            "serial": ctx.key, "identity_source": "usb_serial",
            "unchecked": ["officer", "clock", "battery", "storage_status"],
        })


def refuse_claimed_serial(ctx: SessionContext, ident: IdentityLike) -> None:
    """The firmware claims another serial than the USB device the dock sees: nothing
    it says can be filed under either, so the docking stops before any unlock."""
    claimed = ident.serial
    detail: dict[str, object] = {
        "usb_serial": ctx.key, "claimed_serial": claimed, "model": ident.model,
        "hardware_rev": ident.hardware_rev, "firmware": ident.firmware,
    }
    raise SessionFailure(
        FC.SERIAL_MISMATCH,
        f"recorder firmware claims serial \"{claimed}\" but its USB serial is"
        f" \"{ctx.key}\":"
        " docking refused (storage not unlocked, nothing wiped)",
        detail=detail)


async def check_identity_policy(ctx: SessionContext) -> None:
    """Faults for what makes a recorder unfit to issue, by identity: firmware not on the
    allowlist, no officer assigned. Each is cleared once the condition is gone."""
    ident = ctx.require_identity()
    policy = ctx.deps.firmware_readiness(ctx.deps.readiness)
    await judge_firmware(ctx)
    if policy.require_officer and not ident.officer_no:
        await ctx.fault(FC.OFFICER_UNASSIGNED, "no officer assigned to the recorder",
                        "warning", {})
    else:
        await ctx.clear_condition(FC.OFFICER_UNASSIGNED, "officer assigned")


async def judge_firmware(ctx: SessionContext) -> None:
    """The `firmware_not_allowed` fault by the policy in force now (config and central
    allowlists, agent.compliance.firmware): raised once while it holds, cleared when a
    policy allows the firmware again. Run at identification and whenever the policy
    changes while the recorder is docked; it only records a readiness fact."""
    ident = ctx.require_identity()
    policy = ctx.deps.firmware_readiness(ctx.deps.readiness)
    problem = firmware_problem(policy, ident.model, ident.firmware)
    if problem is None:
        await ctx.clear_condition(FC.FIRMWARE_NOT_ALLOWED, "firmware allowed")
    elif not any(f.code == FC.FIRMWARE_NOT_ALLOWED.value for f in ctx.facts.faults):
        await ctx.fault(FC.FIRMWARE_NOT_ALLOWED, problem, "warning",
                        {"model": ident.model, "firmware": ident.firmware})
