"""Faults from one offload's summary: per-file problems, late footage, officers in names."""

from __future__ import annotations

from agent.offload import FileProblem, OffloadSummary
from agent.offload.summary import ProblemList
from agent.session.context import SessionContext
from agent.store.faults import FaultCode as FC
from agent.store.faults import Severity


def text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def problem_facts(p: FileProblem) -> dict[str, object]:
    return {**(p.detail or {}), "name": text(p.name), "reason": p.reason}


def complete_list(problems: ProblemList) -> dict[str, object] | None:
    """Where every entry of a list longer than a fault names is: its ledger entries."""
    if not problems.seqs:
        return None
    return {"ledger_kind": "entry_list", "ledger_seqs": problems.seqs.tolist()}


async def summary_faults(ctx: SessionContext, s: OffloadSummary) -> None:
    """Per-file problems of an offload: each kind is one fault naming its files."""
    groups: list[tuple[FC, Severity, str, ProblemList]] = [
        (FC.READ_ERROR, "error", "files could not be read and were not stored", s.failed),
        (FC.HOSTILE_CONTENT, "warning", "entries refused on the recorder storage", s.refused),
        (FC.WIPE_FAILED, "warning", "stored files could not be wiped from the recorder",
         s.wipe_failed),
    ]
    for code, severity, what, problems in groups:
        if problems.total:
            # the first ones named here; the offloader put the complete list in the ledger
            detail: dict[str, object] = {"count": problems.total,
                                         "files": [problem_facts(p) for p in problems[:50]]}
            where = complete_list(problems)
            if where is not None:
                detail["complete_list"] = where
            await ctx.fault(code, f"{problems.total} {what}", severity, detail)
    late = s.late
    if late.total and ctx.facts.identity is not None:
        serial, officer = ctx.who()
        await ctx.records.past_fault(
            FC.LATE_OFFLOAD, f"{late.total} files stored after their deadline",
            recorder=serial, officer=officer, severity="warning",
            detail={"count": late.total,  # each has its "offloaded" entry (late: true)
                    "files": [{"name": text(f.name), "stored_relpath": f.stored_relpath}
                              for f in late[:50]]})
    bad = s.verify_failed
    if bad.total:
        await ctx.fault(FC.VERIFY_FAILED, f"{bad.total} stored files failed verification",
                        "error", {"count": bad.total,  # each has its "verified" entry
                                  "files": [f.stored_relpath for f in bad[:50]]})


async def officer_disagreements(ctx: SessionContext, s: OffloadSummary) -> None:
    """Files whose names carry another officer than the record read at docking were
    filed under the name's officer (`DockingContext.identity_for`); say so, once (the
    first 50 named, each file's own "offloaded" entry names its officer)."""
    dctx = ctx.carry.offload_ctx
    if dctx is None or not s.other_officer.total:
        return
    docking_officer = dctx.identity.officer_no
    count = s.other_officer.total
    files = [{"name": text(f.name), "name_hex": f.name.hex(), "officer_no": officer,
              "stored_relpath": f.stored_relpath}
             for f, officer in s.other_officer[:50]]
    names = sorted({str(f["officer_no"]) for f in files})
    more = "" if s.other_officer.complete else " and others"
    await ctx.fault(
        FC.OFFICER_MISMATCH,
        f"{count} files name officer {', '.join(names)}{more} but the recorder's"
        f" officer record at docking was {docking_officer or '(none)'}; filed under"
        " the officer in the file name", "warning",
        {"docking_officer": docking_officer, "count": count, "files": files})
