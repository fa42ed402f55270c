"""Lifecycle requests as they enter the agent (control socket and MQTT): views, exports,
case tags and file listings. Each request is validated and refused with a clear reason
before anything is written; each one that goes ahead is in the ledger before it acts.
Exports and preservation copies are written by `exports.Exporter`, the fixity audit is
run by `fixity.FixityAuditor`; this service is their one front door.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.lifecycle import selection, tags
from agent.lifecycle.exports import Exporter, approved, file_facts
from agent.lifecycle.fixity import FixityAuditor
from agent.longjobs import LongJobs
from agent.settings import AccessSettings, AuditSettings
from agent.store import evidence
from agent.store.db import Database
from agent.store.ledger import EntryKind, Ledger

log = logging.getLogger(__name__)
Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]


def file_listing(conn: sqlite3.Connection, f: evidence.StoredFile) -> dict[str, Any]:
    return {**file_facts(f), "size": f.size, "blake3": f.blake3_hex,
            "rec_date": f.rec_day.isoformat(), "on_hold": f.on_hold,
            "purged": f.purged_us is not None, "verify_state": f.verify_state,
            "tags": [t.as_dict() for t in tags.tags_of(conn, f.id)]}


class LifecycleService:
    """The lifecycle requests of the control socket and MQTT, in one place."""

    def __init__(self, access: AccessSettings, audit_settings: AuditSettings, db: Database,
                 ledger: Ledger, key: Ed25519PrivateKey, *, dock_id: str, store_dir: Path,
                 busy: Callable[[], bool] = lambda: False, jobs: LongJobs | None = None
                 ) -> None:
        self.access = access
        self.db = db
        self.ledger = ledger
        self.store_dir = store_dir
        self.exporter = Exporter(access, db, ledger, key, dock_id=dock_id,
                                 store_dir=store_dir, jobs=jobs)
        self.auditor = FixityAuditor(audit_settings, db, ledger, store_dir=store_dir,
                                     busy=busy, jobs=jobs)
        self.recover = self.exporter.recover
        self.export = self.exporter.export
        self.preserve = self.exporter.preserve
        self.run_audits = self.auditor.run_audits
        self.audit_slice = self.auditor.audit_slice
        self.audit_run = self.auditor.audit_run
        self.audit_status = self.auditor.audit_status

    def control_handlers(self) -> dict[str, Handler]:
        return {"export": self.export, "show": self.show, "tag": self.tag,
                "files": self.files, "audit": self.audit_status, "audit-run": self.audit_run,
                "preserve": self.preserve}

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

    async def show(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """A view: the access-register entry is committed before the file is shown."""

        def tx(conn: sqlite3.Connection) -> dict[str, Any]:
            req, found = approved(conn, args, self.access.approvers)
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
