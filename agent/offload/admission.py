"""Admission: which files of an offload fit the evidence disk, counting every other bay's
promise, so two recorders cannot both be admitted into the same free space."""

from __future__ import annotations

import asyncio
from array import array
from dataclasses import dataclass

from agent.offload.items import Items
from agent.offload.problems import ProblemLog
from agent.offload.storefs import free_bytes
from agent.offload.summary import FileProblem, OffloadSummary
from agent.offload.walk import SourceFile
from agent.offload.workers import Plant
from agent.store.canonical import MAX_SAFE_INT

SPARSE_SLACK = 1 << 20  # allocation may trail the size by this much (inline data, tails)


@dataclass(frozen=True, slots=True)
class Admitted:
    token: int  # this offload's promise in the ledger of promises
    items: array[int]  # indices (in `Items`) of the files admitted, in listing order
    left: int  # how many were left out for lack of room
    full: str  # what to say about those left out ("" when none)


def impossible(f: SourceFile, capacity: int, room: int, sizes_known: bool) -> str | None:
    """Why a file cannot be a real recording (None when it can)."""
    if capacity > 0 and f.size > capacity:
        return (f"claims {f.size} bytes, more than the recorder's whole storage"
                f" ({capacity} bytes)")
    allocated = f.blocks * 512
    if sizes_known and allocated + SPARSE_SLACK < f.size and f.size > room:
        return (f"sparse: claims {f.size} bytes with {allocated} allocated, more than"
                f" the dock has room for ({max(room, 0)} bytes)")
    return None


class Promises:
    """Bytes promised to every admitted offload, counted down as they are written."""

    def __init__(self, plant: Plant) -> None:
        self._plant = plant
        self._lock = asyncio.Lock()
        self._reserved: dict[int, int] = {}

    async def admit(self, items: Items, capacity: int, summary: OffloadSummary,
                    problems: ProblemLog) -> Admitted:
        """Per file not stored yet: the impossible are refused, the rest admitted in order
        while they fit.

        An impossible file (larger than the recorder's whole storage, or sparse and larger
        than the dock could take) is the recorder's fault and never blocks the others.
        """
        p = self._plant
        reserve = p.settings.reserve_mib << 20
        sizes_known = any(f.blocks > 0 for f in items.files)
        async with self._lock:
            free = await p.workers.call(free_bytes, p.store)
            others = sum(self._reserved.values())
            held = p.db.reserve.shortfall()  # given back on a full disk: not free
            room = free - reserve - others - held
            admitted, (left, missing), need = await self._fit(items, capacity, room,
                                                              sizes_known, problems)
            summary.bytes_needed, summary.bytes_free = need + missing, free
            full = (f"dock storage full: {left} files ({missing} bytes) do not fit:"
                    f" {need + missing} bytes to store + {reserve} reserve + {others}"
                    f" promised to other bays"
                    + (f" + {held} kept for the custody database" if held else "")
                    + f" > {free} free") if left else ""
            token = id(summary)
            self._reserved[token] = need
            return Admitted(token, admitted, left, full)

    @staticmethod
    async def _fit(items: Items, capacity: int, room: int, sizes_known: bool,
                   problems: ProblemLog) -> tuple[array[int], tuple[int, int], int]:
        """(admitted indices, (files left out, their bytes), bytes needed)."""
        admitted = array("I")
        left = missing = need = 0
        for i in items.to_copy():  # a file stored already has nothing to admit
            item = items[i]
            why = impossible(item.file, capacity, room, sizes_known)
            if why is not None:
                size = item.file.size  # as claimed: may exceed what JSON carries
                await problems.add("refused", FileProblem(item.file.relpath, why, detail={
                    "size": size if size <= MAX_SAFE_INT else str(size)}))
                continue
            n = item.still_needed()
            if n > 0 and need + n > room:
                left, missing = left + 1, missing + n
                continue
            need += n
            admitted.append(i)
        return admitted, (left, missing), need

    def promise(self, token: int, n: int) -> None:
        """What is still promised to this offload (set between files, by the loop)."""
        self._reserved[token] = n

    def spend(self, token: int, n: int) -> None:
        """Written bytes left the free space: stop counting them as promised too (else a
        long copy would keep other bays out twice over). Called from a copy thread; the
        loop only resets this token's promise when no copy of it is running."""
        left = self._reserved.get(token)
        if left is not None:
            self._reserved[token] = max(0, left - n)

    def release(self, token: int) -> None:
        del self._reserved[token]
