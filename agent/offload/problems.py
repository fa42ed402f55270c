"""Problem lists recorded in the ledger as they grow, so none is held whole.

A hostile recorder may hold hundreds of thousands of entries the dock refuses or cannot
read. Each list (`ProblemList`) keeps its count and a few names; once it is longer than a
fault names, its entries go to the ledger in "entry_list" entries of `LIST_CHUNK` each,
written while the walk and the copies go on (at most two chunks wait in memory). The last
entry of a list carries the list's count and number of parts; the fault names the count
and every entry's seq.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Literal

from agent.domain import DockingContext
from agent.offload.summary import LIST_CHUNK, FileProblem, OffloadSummary, ProblemList
from agent.offload.walk import Problem, Refused
from agent.store.db import Database
from agent.store.evidence import display_name
from agent.store.faults import FaultCode
from agent.store.ledger import EntryKind, Ledger

ListKey = Literal["refused", "failed", "wipe_failed"]
# summary lists that a session turns into faults, with the fault code each one gets
LISTS: tuple[tuple[ListKey, FaultCode], ...] = (
    ("refused", FaultCode.HOSTILE_CONTENT), ("failed", FaultCode.READ_ERROR),
    ("wipe_failed", FaultCode.WIPE_FAILED))
_CODES = dict(LISTS)


def problem_fields(p: FileProblem) -> dict[str, object]:
    return {"name": display_name(p.name), "name_hex": p.name.hex(), "reason": p.reason,
            **(p.detail or {})}


class ProblemLog:
    """Adds entries to one offload's problem lists and writes their ledger chunks."""

    def __init__(self, db: Database, ledger: Ledger, ctx: DockingContext,
                 summary: OffloadSummary) -> None:
        self._db, self._ledger, self._ctx, self._summary = db, ledger, ctx, summary
        self._writing = asyncio.Lock()  # one chunk at a time (the copies and the wipes add)

    def _list(self, key: ListKey) -> ProblemList:
        lst: ProblemList = getattr(self._summary, key)
        return lst

    async def add(self, key: ListKey, problem: FileProblem) -> None:
        """Add one entry (on the event loop); a full chunk is written before returning."""
        lst = self._list(key)
        lst.append(problem)
        if lst.chunk_ready:
            async with self._writing:
                while lst.chunk_ready:  # another task may have written it meanwhile
                    chunk, tx = self._chunk(key, last=False)
                    self._recorded(lst, chunk, await self._db.write(tx))

    def add_blocking(self, key: ListKey, problem: FileProblem) -> None:
        """Add one entry from a worker thread (the walk, while nothing else adds),
        writing a full chunk there."""
        lst = self._list(key)
        lst.append(problem)
        if lst.chunk_ready:
            chunk, tx = self._chunk(key, last=False)
            self._recorded(lst, chunk, self._db.write_sync(tx))

    def walked(self, p: Problem) -> None:
        """The walk's sink: a refused entry, or one that could not be read."""
        self.add_blocking("refused" if isinstance(p, Refused) else "failed",
                          FileProblem(p.relpath, p.reason))

    async def close(self) -> None:
        """Write the rest of every list longer than a fault names (the last chunk of each
        carries the list's count)."""
        async with self._writing:
            for key, _ in LISTS:
                lst = self._list(key)
                while lst.long and lst.unrecorded:
                    chunk, tx = self._chunk(key, last=True)
                    self._recorded(lst, chunk, await asyncio.shield(self._db.write(tx)))

    @staticmethod
    def _recorded(lst: ProblemList, chunk: list[FileProblem], seq: int) -> None:
        """The chunk is committed: the list keeps only its seq."""
        lst.seqs.append(seq)
        lst.parts += 1
        del lst.unrecorded[:len(chunk)]

    def _chunk(self, key: ListKey, *, last: bool
               ) -> tuple[list[FileProblem], Callable[[sqlite3.Connection], int]]:
        """The next chunk of a list and the transaction writing it (returns its seq)."""
        lst = self._list(key)
        chunk = lst.unrecorded[:LIST_CHUNK]
        part = lst.parts + 1
        count = lst.total if last and len(chunk) == len(lst.unrecorded) else None
        data: dict[str, object] = {"list": key, "code": _CODES[key].value, "part": part,
                                   "entries": [problem_fields(p) for p in chunk]}
        if count is not None:
            data.update(parts=part, count=count)
        ident, ctx, ledger = self._ctx.identity, self._ctx, self._ledger

        def tx(conn: sqlite3.Connection) -> int:
            return ledger.append(
                conn, EntryKind.ENTRY_LIST, recorder=ident.serial, officer=ident.officer_no,
                bay=ctx.bay, session_id=ctx.session_id, data=data).seq

        return chunk, tx
