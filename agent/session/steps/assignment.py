"""Writing an officer assignment to a docked recorder (after its footage is off)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from agent.session.context import SessionContext
from agent.store import assignments
from agent.store.faults import FaultCode as FC
from firmware_bridge.messages import OfficerRecord

_FIELDS = ("officer_no", "officer_name", "unit_no", "unit_name")


async def apply_pending_assignment(ctx: SessionContext) -> bool:
    """Write an officer assignment requested while the recorder was away (or just now).

    Only after this docking's offload completed: until then the recorder's files are
    attributed to the officer read at docking, and a request that arrives meanwhile
    (or at a docking whose offload fails) stays pending. The recorder is written,
    read back, and only a matching read-back is recorded as `officer_assigned` (the
    officer before and after) and marks the request applied, in one transaction.
    """
    async with ctx.assigning:  # the docking itself and a command may both ask
        return await _apply(ctx)


async def _apply(ctx: SessionContext) -> bool:
    link, ident = ctx.res.link, ctx.facts.identity
    if link is None or ident is None or ctx.storage_only or not ctx.carry.footage_settled:
        return False  # stays pending: applied once this docking's footage is stored
    serial = ident.serial
    pending = await ctx.deps.db.read(lambda conn: assignments.pending(conn, serial))
    if pending is None:
        return False
    record = OfficerRecord(officer_no=pending.officer_no, officer_name=pending.officer_name,
                           unit_no=pending.unit_no, unit_name=pending.unit_name)
    await ctx.call("set officer", link.set_officer(record))
    back = await ctx.call("get officer", link.get_officer())
    if back is None or any(getattr(back, f) != getattr(record, f) for f in _FIELDS):
        await ctx.fault(FC.PROTOCOL_ERROR, "officer assignment did not take: read-back"
                        " differs from what was written", "warning",
                        {"assignment_id": pending.id})
        return False
    before = {f: getattr(ident, f) for f in _FIELDS}
    ctx.facts.identity = replace(ident, **{f: getattr(record, f) for f in _FIELDS})
    ctx.machine.identify(serial, record.officer_no)
    ledger, bay, session_id = ctx.deps.ledger, ctx.bay, ctx.session_id
    result = ctx.facts.offload_result
    data: dict[str, object] = {"before": before,
                               "after": {f: getattr(record, f) for f in _FIELDS},
                               "assignment_id": pending.id,
                               "requested_by": pending.requested_by,
                               "offload": result.as_record() if result else None}
    if ctx.carry.left_on_recorder:
        # Not stored this docking (unreadable): recorded while `before` held it (the
        # first named, with the count and, for a long list, its ledger entries).
        data["left_on_recorder"] = ctx.carry.left_on_recorder
        data["left_on_recorder_count"] = ctx.carry.left_on_recorder_count
        if ctx.carry.left_on_recorder_list is not None:
            data["left_on_recorder_list"] = ctx.carry.left_on_recorder_list

    def tx(conn: sqlite3.Connection) -> None:
        ledger.append(conn, "officer_assigned", recorder=serial, officer=record.officer_no,
                      bay=bay, session_id=session_id, data=data)
        assignments.mark_applied(conn, pending.id)

    await ctx.deps.db.write(tx)
    await ctx.clear_condition(FC.OFFICER_UNASSIGNED, "officer assigned")
    ctx.changed()
    return True
