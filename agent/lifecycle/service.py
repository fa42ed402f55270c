"""Lifecycle requests as they enter the agent (control socket; MQTT later): views, exports,
case tags and file listings. Each request is validated and refused with a clear reason
before anything is written; each one that goes ahead is in the ledger before it acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.lifecycle import audit, package, register, selection, tags
from agent.lifecycle.access import AccessRequest, check_approver, parse_request
from agent.lifecycle.errors import AccessRefused, ExportFailed, LifecycleError
from agent.settings import AccessSettings, AuditSettings
from agent.store import evidence
from agent.store.db import Database
from agent.store.durable import fsync_dir
from agent.store.ledger import EntryKind, Ledger, iso_utc

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


def _file_facts(f: evidence.StoredFile) -> dict[str, Any]:
    """A file's maker and custody references, as the statement and register name them."""
    return {"file_id": f.id, "recorder": f.recorder_serial, "officer_no": f.officer_no,
            "officer_name": f.officer_name, "unit_no": f.unit_no,
            "source_name": f.source_display, "stored_relpath": f.stored_relpath,
            "rec_start": None if f.rec_start_us is None else iso_utc(f.rec_start_us),
            "rec_end": None if f.rec_end_us is None else iso_utc(f.rec_end_us),
            "offloaded_seq": f.ledger_seq}


def file_listing(conn: sqlite3.Connection, f: evidence.StoredFile) -> dict[str, Any]:
    return {**_file_facts(f), "size": f.size, "blake3": f.blake3_hex,
            "rec_date": f.rec_day.isoformat(), "on_hold": f.on_hold,
            "purged": f.purged_us is not None, "verify_state": f.verify_state,
            "tags": [t.as_dict() for t in tags.tags_of(conn, f.id)]}


class LifecycleService:
    def __init__(self, access: AccessSettings, audit_settings: AuditSettings, db: Database,
                 ledger: Ledger, key: Ed25519PrivateKey, *, dock_id: str, store_dir: Path,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self.access = access
        self.audit_settings = audit_settings
        self.busy = busy  # True while an offload runs: the audit yields the disk to it
        self._audit_lock = asyncio.Lock()
        self.db = db
        self.ledger = ledger
        self.key = key
        self.dock_id = dock_id
        self.store_dir = store_dir
        self._export_lock = asyncio.Lock()

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

    def control_handlers(self) -> dict[str, Handler]:
        return {"export": self.export, "show": self.show, "tag": self.tag,
                "files": self.files, "audit": self.audit_status, "audit-run": self.audit_run,
                "preserve": self.preserve}

    # --- fixity audit --------------------------------------------------------------------

    async def run_audits(self) -> None:
        """The schedule: one slice every `interval_s` (first one after one interval)."""
        while True:
            await asyncio.sleep(self.audit_settings.interval_s)
            try:
                await self.audit_slice()
            except (OSError, sqlite3.Error):
                log.exception("fixity audit run failed; retrying at the next interval")

    async def audit_slice(self, limit: int | None = None) -> dict[str, Any]:
        cfg = self.audit_settings
        async with self._audit_lock:
            started = register_now()
            cur, files, completes = await self.db.read(
                lambda c: audit.plan(c, cfg.interval_s, cfg.cycle_days, limit))
            if not files and cur.after_file == 0:  # an empty store: nothing to record
                return {"cycle": cur.cycle, "files_checked": 0, "bytes_checked": 0,
                        "problems": [], "cycle_complete": False, "ledger_seq": None}
            offloading = threading.Event()  # read by the worker; set from the loop only

            async def watch_offloads() -> None:
                while True:
                    (offloading.set if self.busy() else offloading.clear)()
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch_offloads())
            try:
                checked, problems = await asyncio.to_thread(
                    audit.check_files, self.store_dir, files,
                    max_bytes_per_s=cfg.max_mib_per_s * (1 << 20), busy=offloading.is_set)
            finally:
                watcher.cancel()
            return await self.db.write(lambda c: audit.record_run(
                c, self.ledger, cur, files, checked, problems, completes, started))

    async def audit_run(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Run now: one scheduled slice, or (`all`) the rest of the current cycle."""
        if args.get("all"):
            return await self.audit_slice(limit=audit.MAX_FILES)
        return await self.audit_slice()

    async def audit_status(self, _: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.audit_settings
        out = await self.db.read(lambda c: audit.status(c, cfg.interval_s, cfg.cycle_days))
        return {**out, "enabled": cfg.enabled, "interval_s": cfg.interval_s,
                "cycle_days": cfg.cycle_days}

    # --- listings ------------------------------------------------------------------------

    async def files(self, args: Mapping[str, Any]) -> dict[str, Any]:
        sel = args.get("selection") or {}

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            if sel:
                found = selection.select(conn, sel, include_purged=True)
            else:
                found = evidence.query(conn)
            case = args.get("case_no")
            if case:
                wanted = set(tags.files_with_case(conn, str(case)))
                found = [f for f in found if f.id in wanted]
            return [file_listing(conn, f) for f in found]

        return {"files": await self.db.read(run)}

    # --- case tags -----------------------------------------------------------------------

    async def tag(self, args: Mapping[str, Any]) -> dict[str, Any]:
        fields = tags.parse_tag(args)
        sel = args.get("selection")
        if not isinstance(sel, dict):
            raise selection.SelectionError("selection must be an object")

        def tx(conn: sqlite3.Connection) -> dict[str, Any]:
            found = selection.select(conn, sel, include_purged=True)
            entry = tags.tag_files(conn, self.ledger, found, fields)
            return {"tagged": len(found), "file_ids": [f.id for f in found],
                    "ledger_seq": entry.seq}

        return await self.db.write(tx)

    # --- views ---------------------------------------------------------------------------

    def _approved(self, conn: sqlite3.Connection, args: Mapping[str, Any]
                  ) -> tuple[AccessRequest, list[evidence.StoredFile]]:
        req = parse_request(args)
        sel = args.get("selection")
        if not isinstance(sel, dict):
            raise selection.SelectionError("selection must be an object")
        found = selection.select(conn, sel)
        check_approver(req, {f.unit_no for f in found}, self.access.approvers)
        return req, found

    async def show(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """A view: the access-register entry is committed before the file is shown."""

        def tx(conn: sqlite3.Connection) -> dict[str, Any]:
            req, found = self._approved(conn, args)
            out = []
            for f in found:
                entry = self.ledger.append(
                    conn, EntryKind.ACCESSED, recorder=f.recorder_serial,
                    officer=f.officer_no, bay=f.bay, session_id=f.session_id,
                    data={**req.as_dict(), "access": "view", "file_id": f.id,
                          "blake3": f.blake3_hex, "stored_relpath": f.stored_relpath})
                out.append({**file_listing(conn, f), "access_seq": entry.seq,
                            "path": str(self.store_dir / f.stored_relpath)})
            return {"files": out}

        return await self.db.write(tx)

    # --- exports -------------------------------------------------------------------------

    async def export(self, args: Mapping[str, Any]) -> dict[str, Any]:
        target_arg = args.get("target")
        if not isinstance(target_arg, str) or not Path(target_arg).is_absolute():
            raise AccessRefused("target must be an absolute directory path")
        target = Path(target_arg)
        if not await asyncio.to_thread(target.is_dir):
            raise AccessRefused(f"export target {target} is not a mounted directory")
        async with self._export_lock:  # one export at a time: the target disk is the limit
            return await self._export(args, target)

    def _register(self, conn: sqlite3.Connection, req: AccessRequest,
                  found: list[evidence.StoredFile], target: Path, kind: str,
                  labels: Mapping[str, Any] | None = None
                  ) -> tuple[int, str, list[package.SourceFile]]:
        export_id = register.next_id(conn)
        day = iso_utc(register_now()).split("T")[0]
        word = "export" if kind == "export" else "preservation"
        name = f"{self.dock_id}-{word}-{export_id:06d}-{day}"
        sources = [package.SourceFile(self.store_dir / f.stored_relpath, f.stored_relpath,
                                      f.size, f.blake3_hex, _file_facts(f)) for f in found]
        register.begin(conn, self.ledger, export_id, req, target=str(target), package=name,
                       kind=kind, labels=labels,
                       files=[{"file_id": f.id, "blake3": f.blake3_hex, "size": f.size,
                               "stored_relpath": f.stored_relpath,
                               "recorder": f.recorder_serial, "officer_no": f.officer_no}
                              for f in found])
        return export_id, name, sources

    async def _export(self, args: Mapping[str, Any], target: Path) -> dict[str, Any]:
        def begin(conn: sqlite3.Connection) -> tuple[int, str, list[package.SourceFile]]:
            req, found = self._approved(conn, args)
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

        def produce() -> dict[str, Any]:
            if final.exists():
                raise ExportFailed(f"{final} already exists on the target")
            facts = package.write_package(work, sources, statement, self.key,
                                          throttle=package.Throttle(rate))
            check = package.verify_package(work, self.key.public_key())
            if not check.ok:
                raise ExportFailed("read-back from the target failed: "
                                   + "; ".join(check.problems[:5]))
            work.rename(final)
            fsync_dir(target)
            return facts

        try:
            facts = await asyncio.to_thread(produce)
        except (OSError, LifecycleError) as exc:
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

    # --- long-term preservation (000 §16) ------------------------------------------------

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

        def begin(conn: sqlite3.Connection) -> list[tuple[int, str, list[package.SourceFile]]]:
            req, found = self._approved(conn, args)
            jobs = [self._register(conn, req, found, p, "preservation", labels)
                    for p in paths]
            for f in found:  # never purged on the dock while preserved
                if not any(h.active and h.set_by == "preservation" for h in f.holds):
                    evidence.set_hold(conn, self.ledger, f.id,
                                      f"preserved (exports {jobs[0][0]}, {jobs[1][0]})",
                                      by="preservation")
            return jobs

        async with self._export_lock:
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


def register_now() -> int:
    from agent.store.ledger import current_us

    return current_us()


def _remove_partial(work: Path) -> bool:
    """Best effort: an incomplete copy of evidence should not stay on a removable disk."""
    with contextlib.suppress(OSError):
        shutil.rmtree(work)
    return not work.exists()
