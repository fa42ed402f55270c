"""What the agent does for commands from the central service (and the control socket).

Commands enter at the top like any other event: each is validated, recorded in the custody
ledger where it changes anything, and answered with what was done. A command that cannot
be carried out is refused with a reason and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.dockview import DockView
from agent.firmware.commands import run_command
from agent.firmware.errors import FirmwareError
from agent.firmware.service import FirmwareService
from agent.hold_scope import in_scope, instant_us
from agent.lifecycle.service import LifecycleService
from agent.longjobs import JobStopped, LongJobs, StopSignal
from agent.mqtt.errors import CommandRejected
from agent.settings import Settings
from agent.store import assignments, evidence
from agent.store.db import Database, open_readonly
from agent.store.ledger import Ledger
from firmware_bridge.messages import OFFICER_FIELD_WIDTHS

# Field sizes of the recorder's officer record (protocol: fixed-size UTF-8 fields).
OFFICER_FIELDS = OFFICER_FIELD_WIDTHS


def _check_officer(record: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, limit in OFFICER_FIELDS.items():
        value = record.get(name, "")
        if not isinstance(value, str):
            raise CommandRejected(f"{name} must be a string")
        if len(value.encode("utf-8")) > limit:
            raise CommandRejected(f"{name} is longer than {limit} bytes of UTF-8")
        out[name] = value
    if not out["officer_no"]:
        raise CommandRejected("officer_no is required")
    return out


class AgentActions:
    """The agent's `CommandActions` (agent.mqtt.command_processor), given every
    collaborator when it is built."""

    def __init__(self, settings: Settings, db: Database, ledger: Ledger, view: DockView, *,
                 assign_now: Callable[[str], Awaitable[bool]],
                 lifecycle: LifecycleService | None = None,
                 firmware: FirmwareService | None = None,
                 firmware_policy_changed: Callable[[], Awaitable[None]] | None = None,
                 jobs: LongJobs | None = None) -> None:
        self.settings = settings
        self.db = db
        self.ledger = ledger
        self.view = view
        self.assign_now = assign_now  # writes a pending assignment to a docked recorder
        self.lifecycle_service = lifecycle
        self.firmware_service = firmware
        # judges the docked recorders' firmware by a new policy now (the session table)
        self.firmware_policy_changed = firmware_policy_changed
        self.jobs = jobs if jobs is not None else LongJobs(1)  # a deep verify runs there

    async def firmware(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """set-firmware-policy, stage-firmware (agent.firmware.commands)."""
        if self.firmware_service is None:
            raise CommandRejected("this agent does not handle recorder firmware")
        try:
            reply = await run_command(self.firmware_service, name, args)
        except FirmwareError as exc:
            raise CommandRejected(str(exc)) from exc
        if name == "set-firmware-policy" and self.firmware_policy_changed is not None:
            await self.firmware_policy_changed()
        return reply

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """tag, export, preserve, audit: the same requests dockctl makes (docs/mqtt.md)."""
        from agent.lifecycle.errors import ExportFailed, LifecycleError

        svc = self.lifecycle_service
        if svc is None:
            raise CommandRejected("this agent does not run the evidence lifecycle")
        try:
            if name == "tag":
                return await svc.tag(args)
            if name == "export":
                return await svc.export(args)
            if name == "preserve":
                return await svc.preserve(args)
            run = args.get("run", "none")
            last = None
            if run != "none":
                last = await svc.audit_run({"all": run == "cycle"})
            return {**await svc.audit_status({}), "run": last}
        except ExportFailed:
            raise  # a target that failed: the reply says "failed", the register too
        except JobStopped:  # an audit cut short by the stop: recorded nothing
            raise CommandRejected("the dock is stopping; run it again once it is back"
                                  ) from None
        except LifecycleError as exc:
            raise CommandRejected(str(exc)) from exc

    async def assign_officer(self, serial: str, record: Mapping[str, str]) -> dict[str, Any]:
        fields = _check_officer(record)
        req = await self.db.write(
            lambda conn: assignments.request(
                conn, serial, officer_no=fields["officer_no"],
                officer_name=fields["officer_name"], unit_no=fields["unit_no"],
                unit_name=fields["unit_name"], requested_by="central",
            )
        )
        applied = await self.assign_now(serial)
        return {"assignment_id": req.id, "recorder": serial,
                "applied": applied, "pending": not applied}

    async def set_hold(self, hold_id: str, reason: str, scope: Mapping[str, Any]) -> dict[str, Any]:
        if not reason:
            raise CommandRejected("a hold needs a reason")
        ledger = self.ledger
        by = f"central:{hold_id}"
        if not any(scope.get(k) is not None for k in ("serial", "officer_no", "from", "to",
                                                      "files")):
            raise CommandRejected("scope must name at least one of serial, officer_no, from,"
                                  " to, files")
        for key in ("from", "to"):
            instant_us(scope, key)  # refuse a bad time before anything is written

        def tx(conn: sqlite3.Connection) -> list[int]:
            files = [f for f in evidence.query(conn, device=scope.get("serial"),
                                               officer=scope.get("officer_no"),
                                               include_purged=False)
                     if in_scope(f, scope)]
            # The scope itself is kept: files offloaded later that fall in it are held
            # too (retention applies it before every purge decision).
            from agent.upload.retention import set_scope

            set_scope(conn, hold_id, reason, scope, int(dt.datetime.now(dt.UTC).timestamp()
                                                        * 1_000_000))
            held = []
            for f in files:
                if any(h.active and h.set_by == by for h in evidence.holds(conn, f.id)):
                    continue  # this hold already covers the file
                evidence.set_hold(conn, ledger, f.id, reason, by=by)
                held.append(f.id)
            return held

        held = await self.db.write(tx)
        return {"hold_id": hold_id, "files_held": len(held)}

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]:
        ledger = self.ledger
        by = f"central:{hold_id}"

        def tx(conn: sqlite3.Connection) -> int:
            from agent.upload.retention import clear_scope

            rows = conn.execute(
                "SELECT id FROM evidence_holds WHERE set_by = ? AND cleared_us IS NULL", (by,)
            ).fetchall()
            had_scope = clear_scope(conn, hold_id, int(dt.datetime.now(dt.UTC).timestamp()
                                                       * 1_000_000))
            if not rows and not had_scope:
                raise CommandRejected(f"no active hold {hold_id!r}")
            for (hid,) in rows:
                evidence.clear_hold(conn, ledger, hid, reason or "cleared by central", by=by)
            return len(rows)

        cleared = await self.db.write(tx)
        return {"hold_id": hold_id, "files_released": cleared}

    async def ack_upload(self, files: list[str]) -> dict[str, Any]:
        """Record the central service's acknowledgement of uploaded files (needed before a
        purge when `retention.require_central_ack` is set)."""
        from agent.upload.queue import record_central_ack

        ledger = self.ledger
        acked, unknown = await self.db.write(
            lambda conn: record_central_ack(conn, ledger, files))
        if not acked and unknown:
            raise CommandRejected("no uploaded file matches: " + ", ".join(unknown[:5]))
        return {"acknowledged": acked, "unknown": unknown}

    async def run_verify(self, deep: bool) -> dict[str, Any]:
        from agent.store import verify

        db_path = self.db.path
        store = self.settings.dock.store_dir

        def run(stop: StopSignal) -> tuple[dict[str, Any], list[Any], list[Any]]:
            from agent.store.signing import load_public_key, public_key_path

            key = load_public_key(public_key_path(self.settings.key_file))
            conn = open_readonly(db_path)
            try:
                reports = [verify.verify_ledger(conn, key, stop=stop),
                           verify.verify_store(conn, store, deep=deep, stop=stop)]
            finally:
                conn.close()
            problems = [p for r in reports for p in r.problems]
            return {
                "ok": not problems,
                "deep": deep,
                "entries_checked": reports[0].entries_checked,
                "files_checked": reports[1].files_checked,
                "problems": [{"kind": p.kind, "where": p.where, "detail": p.detail}
                             for p in problems],
            }, reports[0].problems, reports[1].problems

        try:  # on the agent's long-job threads: a stop ends it, judging nothing
            result, ledger_problems, store_problems = await self.jobs.run(run)
        except JobStopped:
            raise CommandRejected("the dock is stopping; verify again once it is back") from None
        from agent.health.integrity import sync_integrity_fault
        from agent.store.faults import FaultCode

        await sync_integrity_fault(self.db, self.ledger, FaultCode.LEDGER_INTEGRITY,
                                   "custody ledger", ledger_problems)
        await sync_integrity_fault(self.db, self.ledger, FaultCode.STORE_INTEGRITY,
                                   "evidence store", store_problems)
        return result

    async def readiness_report(self) -> dict[str, Any]:
        return self.view.readiness_report(time.time())

    async def rebirth(self) -> None:
        self.view.refresh()
