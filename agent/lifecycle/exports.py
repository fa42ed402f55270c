"""Approved exports and long-term preservation copies (regulations 000 §15-16).

Each package is registered (access register + ledger) before a byte leaves the store,
written to a `.partial-` directory on the target, re-read and verified there, then
renamed into place; a failure is recorded and the partial copy removed. One export runs
at a time: the target disk is the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.lifecycle import package, register, selection, tags
from agent.lifecycle.access import AccessRequest, check_approver, parse_request
from agent.lifecycle.errors import AccessRefused, ExportFailed, LifecycleError
from agent.longjobs import JobStopped, LongJobs, StopSignal
from agent.settings import AccessSettings
from agent.store import evidence
from agent.store.db import Database
from agent.store.durable import fsync_dir
from agent.store.ledger import EntryKind, Ledger, current_us, iso_utc

log = logging.getLogger(__name__)
Job = tuple[int, str, list[package.SourceFile]]  # export id, package name, its files


def file_facts(f: evidence.StoredFile) -> dict[str, Any]:
    """A file's maker and custody references, as the statement and register name them."""
    return {"file_id": f.id, "recorder": f.recorder_serial, "officer_no": f.officer_no,
            "officer_name": f.officer_name, "unit_no": f.unit_no,
            "source_name": f.source_display, "stored_relpath": f.stored_relpath,
            "rec_start": None if f.rec_start_us is None else iso_utc(f.rec_start_us),
            "rec_end": None if f.rec_end_us is None else iso_utc(f.rec_end_us),
            "offloaded_seq": f.ledger_seq}


def approved(conn: sqlite3.Connection, args: Mapping[str, Any], approvers: Mapping[str, Any]
             ) -> tuple[AccessRequest, list[evidence.StoredFile]]:
    """The request and the files it selects, once its approver may approve them all."""
    req = parse_request(args)
    sel = args.get("selection")
    if not isinstance(sel, dict):
        raise selection.SelectionError("selection must be an object")
    found = selection.select(conn, sel)
    check_approver(req, {f.unit_no for f in found}, approvers)
    return req, found


class Exporter:
    """Writes registered packages: exports to one target, preservation to two."""

    def __init__(self, access: AccessSettings, db: Database, ledger: Ledger,
                 key: Ed25519PrivateKey, *, dock_id: str, store_dir: Path,
                 jobs: LongJobs | None = None) -> None:
        self.access = access
        self.db = db
        self.ledger = ledger
        self.key = key
        self.dock_id = dock_id
        self.store_dir = store_dir
        self._lock = asyncio.Lock()
        self.jobs = jobs if jobs is not None else LongJobs(1)  # the agent's: a stop ends it

    async def recover(self) -> list[int]:
        """At start-up: exports cut short by a crash are recorded as failed."""
        started = await self.db.read(
            lambda c: [x for x in register.list_exports(c) if x.state == "started"])
        removed = {x.id: await asyncio.to_thread(
            _remove_partial, Path(x.target) / f".partial-{x.package}") for x in started}
        failed = await self.db.write(
            lambda c: register.fail_interrupted(c, self.ledger, removed))
        if failed:
            log.warning("exports %s were interrupted and are recorded as failed", failed)
        return failed

    async def export(self, args: Mapping[str, Any]) -> dict[str, Any]:
        target_arg = args.get("target")
        if not isinstance(target_arg, str) or not Path(target_arg).is_absolute():
            raise AccessRefused("target must be an absolute directory path")
        target = Path(target_arg)
        if not await asyncio.to_thread(target.is_dir):
            raise AccessRefused(f"export target {target} is not a mounted directory")
        async with self._lock:  # one export at a time: the target disk is the limit
            return await self._export(args, target)

    def _register(self, conn: sqlite3.Connection, req: AccessRequest,
                  found: list[evidence.StoredFile], target: Path, kind: str,
                  labels: Mapping[str, Any] | None = None
                  ) -> Job:
        export_id = register.next_id(conn)
        day = iso_utc(current_us()).split("T")[0]
        word = "export" if kind == "export" else "preservation"
        name = f"{self.dock_id}-{word}-{export_id:06d}-{day}"
        sources = [package.SourceFile(self.store_dir / f.stored_relpath, f.stored_relpath,
                                      f.size, f.blake3_hex, file_facts(f)) for f in found]
        register.begin(conn, self.ledger, export_id, req, target=str(target), package=name,
                       kind=kind, labels=labels,
                       files=[{"file_id": f.id, "blake3": f.blake3_hex, "size": f.size,
                               "stored_relpath": f.stored_relpath,
                               "recorder": f.recorder_serial, "officer_no": f.officer_no}
                              for f in found])
        return export_id, name, sources

    async def _export(self, args: Mapping[str, Any], target: Path) -> dict[str, Any]:
        def begin(conn: sqlite3.Connection) -> Job:
            req, found = approved(conn, args, self.access.approvers)
            return self._register(conn, req, found, target, "export")

        export_id, name, sources = await self.db.write(begin)
        return await self._produce(export_id, name, target, sources, {})

    async def _produce(self, export_id: int, name: str, target: Path,
                       sources: list[package.SourceFile], extra: Mapping[str, Any]
                       ) -> dict[str, Any]:
        """Write, re-read and verify one registered package; record the outcome."""
        rec = await self.db.read(lambda c: register.get(c, export_id))
        assert rec is not None
        work = target / f".partial-{name}"
        final = target / name
        statement = {
            "export_id": export_id, "kind": rec.kind, "dock_id": self.dock_id,
            "units": sorted({str(s.facts["unit_no"]) for s in sources}),
            "time": iso_utc(rec.started_us), "extractor": rec.requester,
            "requester": rec.requester, "approver": rec.approver, "purpose": rec.purpose,
            "register_seq": rec.started_seq, **extra,
        }
        rate = self.access.export_max_mib_per_s * (1 << 20)

        def produce(stop: StopSignal) -> dict[str, Any]:
            if final.exists():
                raise ExportFailed(f"{final} already exists on the target")
            facts = package.write_package(work, sources, statement, self.key,
                                          throttle=package.Throttle(rate, stop))
            check = package.verify_package(work, self.key.public_key(), stop=stop)
            if not check.ok:
                raise ExportFailed("read-back from the target failed: "
                                   + "; ".join(check.problems[:5]))
            work.rename(final)
            fsync_dir(target)
            return facts

        try:
            facts = await self.jobs.run(produce)  # a stop ends it at the next chunk
        except (OSError, LifecycleError, JobStopped) as exc:
            reason = str(exc) if isinstance(exc, LifecycleError) else (
                f"{exc.strerror or exc} ({os.strerror(exc.errno) if exc.errno else 'I/O'})"
                if isinstance(exc, OSError) else str(exc))
            removed = await asyncio.to_thread(_remove_partial, work)
            await self.db.write(lambda c: register.fail(
                c, self.ledger, export_id, reason, {"partial_removed": removed}))
            raise ExportFailed(f"{rec.kind} {export_id} failed: {reason}") from exc
        await self.db.write(lambda c: register.complete(
            c, self.ledger, export_id, {**facts, "path": str(final)}))
        return {"export_id": export_id, "state": "complete", "package": str(final),
                "files": len(sources)}

    async def preserve(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Two independent verified copies on two different media, labelled, and a hold."""
        targets = args.get("targets")
        if (not isinstance(targets, list) or len(targets) != 2
                or not all(isinstance(t, str) and Path(t).is_absolute() for t in targets)):
            raise AccessRefused("preservation needs exactly two absolute target directories")
        paths = [Path(t) for t in targets]
        devices = []
        for p in paths:
            if not await asyncio.to_thread(p.is_dir):
                raise AccessRefused(f"preservation target {p} is not a mounted directory")
            devices.append((await asyncio.to_thread(p.stat)).st_dev)
        if devices[0] == devices[1]:
            raise AccessRefused("the two preservation copies must be on two different"
                                " disks or shares (both targets are on one filesystem)")
        labels = tags.parse_labels(args)

        def begin(conn: sqlite3.Connection) -> list[Job]:
            req, found = approved(conn, args, self.access.approvers)
            jobs = [self._register(conn, req, found, p, "preservation", labels)
                    for p in paths]
            for f in found:  # never purged on the dock while preserved
                if not any(h.active and h.set_by == "preservation" for h in f.holds):
                    evidence.set_hold(conn, self.ledger, f.id,
                                      f"preserved (exports {jobs[0][0]}, {jobs[1][0]})",
                                      by="preservation")
            return jobs

        async with self._lock:
            jobs = await self.db.write(begin)
            results: list[dict[str, Any]] = []
            errors: list[str] = []
            for (export_id, name, sources), target in zip(jobs, paths, strict=True):
                try:
                    results.append(await self._produce(
                        export_id, name, target, sources,
                        {"preservation": {**labels, "copy": len(results) + len(errors) + 1}}))
                except ExportFailed as exc:
                    errors.append(str(exc))
        if errors:
            raise ExportFailed("; ".join(errors) + " (the files stay on hold)")
        ids = [r["export_id"] for r in results]
        entry = await self.db.write(lambda c: self.ledger.append(
            c, EntryKind.PRESERVED, data={"exports": ids, **labels,
                                         "packages": [r["package"] for r in results],
                                         "file_ids": [s.facts["file_id"] for s in jobs[0][2]]}))
        return {"exports": ids, "packages": [r["package"] for r in results],
                "files": results[0]["files"], "ledger_seq": entry.seq}


def _remove_partial(work: Path) -> bool:
    """Best effort: an incomplete copy of evidence should not stay on a removable disk."""
    with contextlib.suppress(OSError):
        shutil.rmtree(work)
    return not work.exists()
