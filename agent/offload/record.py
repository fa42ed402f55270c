"""The custody record of one stored file: evidence row, "offloaded" ledger entry, outbox
event and the pending copy's removal in one transaction, plus a fault when the source
changed during the copy or its recording times were out of range."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from agent.domain import DockingContext
from agent.offload import pending
from agent.offload.copyjob import CopyResult
from agent.offload.items import Item
from agent.offload.pending import JournalEntry
from agent.offload.workers import Plant
from agent.store.evidence import StoredFileRecord, commit_file, display_name
from agent.store.faults import FaultCode, raise_fault
from agent.store.ledger import current_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us_to_dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _change(item: Item, result: CopyResult) -> dict[str, object] | None:
    """What the index row says about a content change (None when there is none)."""
    prev = item.replaced(result)
    if result.changed is None and prev is None:
        return None
    changed: dict[str, object] = {
        "reason": result.changed or "content differs from the copy stored at an earlier docking"}
    if prev is not None:
        changed["replaces"] = {"file_id": prev.id, "blake3": prev.blake3_hex,
                               "size": prev.size, "stored_relpath": prev.stored_relpath}
    return changed


def _record(plant: Plant, ctx: DockingContext, item: Item, j: JournalEntry,
            result: CopyResult, start_us: int) -> StoredFileRecord:
    ident = ctx.identity_for(item.file.relpath)  # the officer who recorded it
    t = item.times
    end_us = current_us()
    # "dock": the recorder's times were out of range; the deadline runs from the
    # fallback (the offload), and no recording time is claimed on the record
    due = plant.deadline.due(_us_to_dt(t.end_us))
    late_by = (_us_to_dt(end_us) - due).total_seconds()
    rejected = [r.as_dict() for r in t.rejected]
    return StoredFileRecord(
        recorder_serial=ident.serial, session_id=ctx.session_id, bay=ctx.bay,
        source_name=item.file.relpath, stored_relpath=j.stored_relpath, size=result.size,
        blake3_hex=result.digest.hex(), rec_start_us=t.start_us,
        rec_end_us=None if t.source == "dock" else t.end_us,
        offload_start_us=start_us, offload_end_us=end_us, unit_no=ident.unit_no,
        officer_no=ident.officer_no, officer_name=ident.officer_name, late=late_by > 0,
        late_by_s=max(0.0, late_by), deadline_us=int(due.timestamp() * 1_000_000),
        source_changed=_change(item, result), rejected_times=rejected or None,
    )


def _faults(conn: sqlite3.Connection, plant: Plant, ctx: DockingContext, item: Item,
            rec: StoredFileRecord, result: CopyResult, file_id: int) -> None:
    ident = ctx.identity_for(item.file.relpath)
    name = display_name(item.file.relpath)
    if rec.source_changed is not None:
        # The flag itself is on the index row; the fault tells the operators.
        prev = item.replaced(result)
        why = (f"{name} changed while it was copied" if result.changed is not None
               else f"{name} holds other content than the copy stored at an earlier"
               f" docking (file {prev.id if prev else '?'})")
        raise_fault(
            conn, plant.ledger, FaultCode.FILE_CHANGED,
            f"{why}; stored as read (a new version), flagged, not wiped",
            recorder=ident.serial, officer=ident.officer_no, bay=ctx.bay,
            session_id=ctx.session_id, severity="warning",
            detail={"file_id": file_id, "stored_relpath": rec.stored_relpath,
                    "name": name, "change": rec.source_changed},
        )
    rejected = rec.rejected_times
    if rejected:
        src = item.times.source
        raise_fault(
            conn, plant.ledger, FaultCode.RECORDING_TIME_INVALID,
            f"{name}: recording time from the recorder out of range; stored under"
            f" the {src} date", recorder=ident.serial, officer=ident.officer_no, bay=ctx.bay,
            session_id=ctx.session_id, severity="warning",
            detail={"file_id": file_id, "name": name, "rejected": rejected,
                    "time_source": src,
                    "files": [{"name": name, "reason": "; ".join(
                        f"{r['field']}={r['raw']}: {r['reason']}" for r in rejected)}]},
        )


async def commit(plant: Plant, ctx: DockingContext, item: Item, j: JournalEntry,
                 result: CopyResult, start_us: int) -> tuple[int, bool]:
    """Commit the custody record of an installed file: (file id, whether it is late)."""
    rec = _record(plant, ctx, item, j, result, start_us)

    def tx(conn: sqlite3.Connection) -> int:
        entry = commit_file(conn, plant.ledger, rec)
        pending.remove(conn, rec.recorder_serial, item.file.relpath)
        file_id = int(entry.data["file_id"])
        _faults(conn, plant, ctx, item, rec, result, file_id)
        return file_id

    return await plant.db.write(tx), rec.late
