"""Step `offload`: unlock the recorder's storage, mount it read-only, have the offloader
take the footage (hashed, committed, only then wiped), unmount."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path

from agent.devices.events import BlockStorage, DirectoryStorage, StorageRef
from agent.devices.port_identity import storage_still_belongs
from agent.docking_state import OffloadProgressFacts, OffloadResult
from agent.domain import DockingContext
from agent.offload import OffloadProgress, OffloadSummary
from agent.offload.errors import StoreFullError
from agent.offload.listing import RecorderListing
from agent.session.context import SessionContext
from agent.session.errors import SessionFailure
from agent.session.recorder_link import RecorderLink
from agent.session.state_machine import State
from agent.session.steps.offload_faults import (
    complete_list,
    officer_disagreements,
    problem_facts,
    summary_faults,
)
from agent.session.steps.offload_faults import text as _text
from agent.store.db import DatabaseFull
from agent.store.faults import FaultCode as FC
from agent.store.ledger import entries as ledger_entries
from firmware_bridge.messages import DeleteRecording, SetMassStorage

MASS_STORAGE_TIMEOUT_S = SetMassStorage.POLICY.min_timeout_s  # the bridge's floor
DELETE_TIMEOUT_S = DeleteRecording.POLICY.min_timeout_s  # the device hashes the file

_OUTCOME_FAULT: dict[str, FC] = {
    "interrupted": FC.STORAGE_ERROR,
    "storage_full": FC.DOCK_STORAGE_FULL,
    "store_error": FC.OFFLOAD_FAILED,
}


class OffloadUnit:
    async def run(self, ctx: SessionContext) -> None:
        if ctx.storage_only:
            await mount_and_offload(ctx, await wait_storage(ctx), None, None)
            return
        link = ctx.require_link()
        recordings = await read_listing(ctx, link)
        ctx.res.unlocked = True  # set first: a cancelled unlock may still have happened
        await ctx.call("unlock storage", link.set_mass_storage(True), FC.STORAGE_ERROR,
                       floor=MASS_STORAGE_TIMEOUT_S)
        ctx.advance(State.STORAGE_UNLOCKED)
        await mount_and_offload(ctx, await wait_storage(ctx), recordings, link)


async def read_listing(ctx: SessionContext, link: RecorderLink) -> RecorderListing:
    """The recorder's listing, packed page by page as it arrives (never held whole as
    records: a recorder may list a million files)."""
    listing = RecorderListing()
    await ctx.call_paged("list recordings",
                         lambda on_page: link.read_recordings(listing.add, on_page),
                         FC.STORAGE_ERROR)
    return listing


async def wait_storage(ctx: SessionContext) -> StorageRef:
    wait_s = ctx.deps.devices.storage_wait_s
    try:
        async with asyncio.timeout(wait_s):
            await ctx.res.storage_event.wait()
    except TimeoutError:
        raise SessionFailure(
            FC.STORAGE_NOT_FOUND,
            f"recorder storage did not appear within {wait_s:g} s of unlocking",
        ) from None
    assert ctx.res.storage_ref is not None
    return ctx.res.storage_ref


async def _mount(ctx: SessionContext, storage: StorageRef) -> Path:
    ctx.res.mounted = True  # from here on it may be mounted: release it on any exit
    where = storage.path if isinstance(storage, DirectoryStorage) else storage.devnode
    try:
        async with asyncio.timeout(ctx.deps.mount_timeout_s):
            return await ctx.deps.mounter.mount(ctx.key, storage)
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        raise SessionFailure(FC.MOUNT_FAILED, "mounting recorder storage timed out",
                             detail={"storage": where}) from None
    except Exception as exc:
        raise SessionFailure(FC.MOUNT_FAILED, f"mounting recorder storage failed: {exc}",
                             detail={"storage": where}) from exc


async def mount_and_offload(ctx: SessionContext, storage: StorageRef,
                            recordings: RecorderListing | None,
                            link: RecorderLink | None) -> None:
    root = await _mount(ctx, storage)
    if isinstance(storage, BlockStorage) and not storage_still_belongs(storage):
        # Mounted first, checked second: the node (sda1) went to the next device before the
        # dock heard of the swap. Nothing of it is read; the recorder is gone.
        ctx.res.storage_lost = True
        raise SessionFailure(FC.STORAGE_ERROR, f"recorder storage {storage.devnode} no"
                             " longer belongs to this recorder (another device has it now)",
                             detail={"storage": storage.devnode, "storage_reassigned": True})
    ctx.facts.done.append("mounted read-only")
    ctx.advance(State.MOUNTED)
    ctx.advance(State.OFFLOADING)
    summary = await _offload(ctx, root, recordings, link)
    result = ctx.facts.offload_result = summary_facts(summary)
    failed = summary.failed  # the first named; the complete list is in the ledger
    ctx.carry.left_on_recorder = [{**problem_facts(p), "name_hex": p.name.hex()}
                                  for p in failed[:50]]
    ctx.carry.left_on_recorder_count = failed.total
    ctx.carry.left_on_recorder_list = complete_list(failed)
    ctx.changed()
    await summary_faults(ctx, summary)
    await officer_disagreements(ctx, summary)
    if summary.outcome != "complete":
        code = _OUTCOME_FAULT.get(summary.outcome, FC.OFFLOAD_FAILED)
        detail: dict[str, object] = {"offload": result.as_record()}
        if summary.outcome == "storage_full":  # what must be free for it to clear
            detail["bytes_needed"] = summary.bytes_needed
        raise SessionFailure(code, f"offload {summary.outcome}: {summary.detail}".rstrip(": "),
                             detail=detail)
    ctx.machine.offload_settled(verified=not summary.failed.total
                                and not summary.verify_failed.total)
    ctx.facts.done.append("offloaded")
    async with asyncio.timeout(ctx.deps.mount_timeout_s):
        await ctx.deps.mounter.unmount(ctx.key)
    ctx.res.mounted = False
    ctx.facts.done.append("unmounted")


async def _offload(ctx: SessionContext, root: Path, recordings: RecorderListing | None,
                   link: RecorderLink | None) -> OffloadSummary:
    identity = ctx.require_identity()
    pattern = ctx.deps.recorder.officer_in_name
    dctx = DockingContext(session_id=ctx.session_id, bay=ctx.bay, identity=identity,
                          first_docking=await _first_docking(ctx, identity.serial),
                          storage_only=ctx.storage_only,
                          officer_in_name=re.compile(pattern) if pattern else None)
    ctx.carry.offload_ctx = dctx
    wiper = _LinkWiper(link, ctx) if link is not None else None

    def on_progress(p: OffloadProgress) -> None:
        ctx.facts.progress = progress_facts(p)
        ctx.changed()

    try:
        return await ctx.deps.offloader.offload(
            dctx, root, recordings=recordings, wiper=wiper, on_progress=on_progress
        )
    except asyncio.CancelledError:
        raise
    except (StoreFullError, DatabaseFull) as exc:
        raise SessionFailure(FC.DOCK_STORAGE_FULL, f"evidence store full: {exc}") from exc
    except Exception as exc:
        raise SessionFailure(FC.OFFLOAD_FAILED, f"offload failed: {exc}",
                             detail={"error": type(exc).__name__}) from exc


async def _first_docking(ctx: SessionContext, serial: str) -> bool:
    """True unless an earlier docking session of this serial is in the ledger."""
    session_id = ctx.session_id

    def q(conn: sqlite3.Connection) -> bool:
        return not any(e.session_id != session_id
                       for e in ledger_entries(conn, recorder=serial, kind="identified",
                                               limit=2))

    return await ctx.deps.db.read(q)


class _LinkWiper:
    """The offloader's `Wiper`: the recorder's guarded delete (size + BLAKE3 checked)."""

    def __init__(self, link: RecorderLink, ctx: SessionContext) -> None:
        self._link = link
        self._ctx = ctx

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        await self._ctx.call("delete recording",
                             self._link.delete_recording(name, size, blake3_digest),
                             floor=DELETE_TIMEOUT_S)

    async def listed(self) -> RecorderListing:
        """The recorder's listing asked again: confirms what its deletes claimed."""
        return await read_listing(self._ctx, self._link)


def summary_facts(s: OffloadSummary) -> OffloadResult:
    """The outcome of an offload, for the undocked record and the snapshot."""
    return OffloadResult(
        outcome=s.outcome, detail=s.detail, stored=s.stored.total,
        already_stored=s.already_stored.total, failed=s.failed.total, refused=s.refused.total,
        wiped=s.wiped.total, wipe_failed=s.wipe_failed.total, late=s.late.total,
        changed=s.changed.total, bytes_copied=s.bytes_copied, resumed_bytes=s.resumed_bytes,
    )


def progress_facts(p: OffloadProgress) -> OffloadProgressFacts:
    return OffloadProgressFacts(
        bytes_done=p.bytes_done, bytes_total=p.bytes_total, files_done=p.files_done,
        files_total=p.files_total, rate_bps=round(p.rate_bps, 1), eta_s=p.eta_s,
        current_file=_text(p.current_file) if p.current_file is not None else None,
    )
