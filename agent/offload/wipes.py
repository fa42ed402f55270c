"""Verify and wipe: re-reading stored files, and guarded deletes on the recorder that are
recorded only once a fresh listing confirms them (the recorder's "deleted" is a claim)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from functools import partial
from pathlib import Path

from agent import crashpoint
from agent.offload import pending
from agent.offload.identify import hash_source
from agent.offload.items import Claim, Claims
from agent.offload.policy import Wiper
from agent.offload.problems import ProblemLog
from agent.offload.rehash import verify_stored
from agent.offload.summary import FileProblem, OffloadSummary
from agent.offload.walk import Scan, SourceFile
from agent.offload.workers import Plant
from agent.store.evidence import get_file, mark_verified, mark_wiped


class Wipes:
    def __init__(self, plant: Plant) -> None:
        self._plant = plant

    async def verify_file(self, file_id: int, final: Path, size: int,
                          digest: bytes, stop: threading.Event) -> bool:
        """Re-read the stored file from disk, compare, and record the result."""
        p = self._plant
        ok, detail = await p.workers.call(verify_stored, final, size, digest, p.pool, stop,
                                          stop=stop)
        await p.db.write(lambda c: mark_verified(c, p.ledger, file_id, ok, detail))
        crashpoint.reached("verified")
        return ok

    async def wipe(self, wiper: Wiper, serial: str, file_id: int, name: bytes, size: int,
                   digest: bytes, problems: ProblemLog, claims: Claims) -> None:
        """Guarded delete on the recorder, bracketed so a crash cannot hide a deletion.

        The intent is durable before the command goes out. The recorder's "deleted" is a
        claim: the wipe record and the intent's removal commit together only once a fresh
        listing no longer shows the file (`confirm`). If the agent dies in between, or
        the answer never comes, the intent stays and the next docking settles it.
        """
        await self._plant.db.write(lambda c: pending.intend_wipe(c, file_id, serial, name,
                                                                 size))
        crashpoint.reached("wipe_intent")
        try:
            await wiper.delete(name, size, digest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await problems.add("wipe_failed", FileProblem(name, f"{type(exc).__name__}: {exc}"))
            return
        claims.append(Claim(file_id, name))
        crashpoint.reached("wipe_sent")

    async def confirm(self, wiper: Wiper, claims: Claims, summary: OffloadSummary,
                      problems: ProblemLog) -> None:
        """Record as wiped only what the recorder no longer lists after its "deleted"."""
        if not claims:
            return
        try:
            present = await wiper.listed()  # kept as the wiper gives it (compact)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for c in claims:  # the intents stay: the next docking decides from the files
                await problems.add("wipe_failed", FileProblem(
                    c.name, f"the recorder answered 'deleted', but could not be asked again"
                    f" ({type(exc).__name__}: {exc}); settled at its next docking",
                    detail={"file_id": c.file_id, "firmware_claim": "deleted"}))
            return
        for c in claims:
            # a recorder may list base names only (as its listing may, see `offload`)
            still = c.name in present or c.name.rpartition(b"/")[2] in present
            await self._plant.db.write(partial(self._settle_claim, c=c, still=still))
            if still:
                await problems.add("wipe_failed", FileProblem(
                    c.name, "the recorder answered 'deleted', but still lists the file",
                    detail={"file_id": c.file_id, "firmware_claim": "deleted"}))
            else:
                crashpoint.reached("wiped")
                summary.wiped.append(c.name)

    def _settle_claim(self, conn: sqlite3.Connection, c: Claim, still: bool) -> None:
        if not still:
            mark_wiped(conn, self._plant.ledger, c.file_id, detail={
                "confirmed_by": "absent from the recorder's listing after its delete"})
        pending.settle_wipe(conn, c.file_id)

    async def settle(self, root: bytes, serial: str, listing: Scan,
                     intents: list[pending.WipeIntent], summary: OffloadSummary,
                     stop: threading.Event) -> None:
        """Settle deletes left undecided by a crash or a lost answer at an earlier docking.

        The file still on the recorder (same content, hashed now) was not deleted: the
        intent goes, and the normal rules may wipe it again. A file no longer there, or a
        name now holding other content, was deleted by that command: the wipe is recorded
        now, saying how it is known. A file at or below an entry the dock could not read
        or refused proves nothing by its absence: its intent stays undecided. `intents`
        are the recorder's (read before the walk, which kept what it refused or could not
        read of them).
        """
        p = self._plant
        if not intents:
            return
        walked = {os.fsencode(d.strip("/")) for d in p.settings.footage_dirs}
        for intent in intents:
            name = intent.source_name
            if name.split(b"/", 1)[0] not in walked:
                continue  # not looked at this time (footage_dirs changed): decide later
            if listing.hides(name):
                continue  # could not be looked at this time: decide later
            how = await self._how_deleted(root, intent, listing.find(name), stop)
            if how is False:
                continue  # unreadable now: decide later
            await p.db.write(partial(self._settle_intent, intent=intent, how=how))
            if how is not None:
                summary.wiped.append(name)

    async def _how_deleted(self, root: bytes, intent: pending.WipeIntent,
                           now: SourceFile | None, stop: threading.Event) -> str | bool | None:
        """How the delete is known to have happened (None: it did not; False: unknown)."""
        name = intent.source_name
        stored = await self._plant.db.read(lambda c: get_file(c, intent.file_id))
        if now is None or stored is None:
            return "absent from the recorder at its next docking"
        if now.size != stored.size:
            return "the name holds a file of another size at the next docking"
        got = await hash_source(self._plant, root, name, now.size, stop)
        if got is None:
            return False
        return None if got == stored.blake3_hex else (
            "the name holds other content at the next docking")

    def _settle_intent(self, conn: sqlite3.Connection, intent: pending.WipeIntent,
                       how: str | bool | None) -> None:
        row = get_file(conn, intent.file_id)
        if isinstance(how, str) and row is not None and not row.wiped:
            mark_wiped(conn, self._plant.ledger, intent.file_id, detail={
                "confirmed_by": how, "interrupted_wipe_requested_at": intent.requested_at})
        pending.settle_wipe(conn, intent.file_id)

    async def wipe_stored(self, serial: str, name: bytes, file_id: int, wiper: Wiper,
                          stop: threading.Event, problems: ProblemLog,
                          claims: Claims) -> None:
        """Wipe a file stored at an earlier docking whose content (hashed at this docking)
        matches stored file `file_id`, once its stored copy is verified."""
        s = await self._plant.db.read(lambda c: get_file(c, file_id))
        if (s is None or not self._plant.settings.wipe_after_offload
                or s.verify_state == "failed" or s.wiped or s.source_changed is not None):
            return
        digest = bytes.fromhex(s.blake3_hex)
        if s.verify_state != "ok" and not await self.verify_file(
                s.id, self._plant.store / s.stored_relpath, s.size, digest, stop):
            return
        await self.wipe(wiper, serial, s.id, name, s.size, digest, problems, claims)
