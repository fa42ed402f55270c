"""dockctl commands of the evidence lifecycle: files, tag, show, export, register,
verify-export. Requests that change or reveal anything go to the running agent (which
records them in the ledger first); the register and package checks read locally."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.control import ControlClientError, request
from agent.dockctl.common import (
    EXIT_FINDING,
    EXIT_OK,
    Paths,
    Subparsers,
    Unreachable,
    UsageError,
    emit_json,
    open_db,
    rfc3339,
)
from agent.dockctl.render import human_bytes, table
from agent.printable import printable

# Errors the agent answers for a request it refuses (as opposed to not answering at all).
REFUSALS = ("AccessRefused", "SelectionError", "TagError", "ExportFailed", "LifecycleError")
EXPORT_TIMEOUT_S = 24 * 3600.0


class Refused(Exception):
    pass


def _ask(paths: Paths, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
    try:
        return request(paths.need_socket(), cmd, timeout=timeout, **args)
    except ControlClientError as exc:
        text = str(exc)
        if text.split(":", 1)[0] in REFUSALS:
            raise Refused(text.split(":", 1)[1].strip()) from exc
        raise Unreachable(f"{text}\n  check: systemctl status dock-agent") from exc


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    files = list(getattr(args, "file", None) or [])
    if files:
        sel["files"] = [int(f) if f.isdigit() else f for f in files]
    for key, attr in (("recorder", "recorder"), ("officer", "officer"), ("from", "since"),
                      ("to", "until")):
        value = getattr(args, attr, None)
        if value:
            sel[key] = value
    return sel


def _add_selection(p: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        p.add_argument("file", nargs="*", help="file id, BLAKE3 hash or stored path")
    else:
        p.add_argument("--file", action="append", help="file id, BLAKE3 hash or stored path")
    p.add_argument("--recorder", help="recorder serial")
    p.add_argument("--officer", help="officer number")
    p.add_argument("--from", dest="since", help="RFC 3339 start of the recording time range")
    p.add_argument("--to", dest="until", help="RFC 3339 end of the recording time range")


def _tag_text(tags: list[dict[str, Any]]) -> str:
    parts = []
    for t in tags:
        bits = [t.get(k) for k in ("case_no", "case_party", "cause", "activity")]
        bits += t.get("labels") or []
        parts.append("/".join(str(b) for b in bits if b))
    return "; ".join(parts) or "-"


def _files_table(files: list[dict[str, Any]]) -> str:
    rows = [[f["file_id"], f["recorder"], f["officer_no"] or "-", f.get("rec_start") or "-",
             human_bytes(f["size"]), f["source_name"],
             ("HOLD " if f.get("on_hold") else "") + ("purged" if f.get("purged") else ""),
             _tag_text(f.get("tags", []))] for f in files]
    return table(["ID", "RECORDER", "OFFICER", "RECORDED", "SIZE", "NAME", "STATE", "TAGS"],
                 rows) if rows else "(no files)"


Command = Callable[[argparse.Namespace, Paths], int]


def _run(fn: Command) -> Command:
    """The command, with the agent's refusal shown as a finding (exit 1)."""

    def wrapped(args: argparse.Namespace, paths: Paths) -> int:
        try:
            code = fn(args, paths)
        except Refused as exc:
            print(printable(f"dockctl: refused: {exc}"))
            return EXIT_FINDING
        return code
    return wrapped


def cmd_files(args: argparse.Namespace, paths: Paths) -> int:
    sel = _selection(args)
    out = _ask(paths, "files", selection=sel, case_no=args.case_no)
    if args.json:
        emit_json(out["files"])
    else:
        print(_files_table(out["files"]))
    return EXIT_OK


def cmd_tag(args: argparse.Namespace, paths: Paths) -> int:
    sel = _selection(args)
    out = _ask(paths, "tag", selection=sel, tagged_by=args.by, case_no=args.case_no,
               case_party=args.case_party, cause=args.cause, activity=args.activity,
               labels=args.label or [])
    if args.json:
        emit_json(out)
    else:
        print(f"tagged {out['tagged']} file(s): {', '.join(map(str, out['file_ids']))}"
              f" (ledger entry {out['ledger_seq']})")
    return EXIT_OK


def _access(args: argparse.Namespace) -> dict[str, Any]:
    return {"requester": args.requester, "approver": args.approver, "purpose": args.purpose}


def cmd_show(args: argparse.Namespace, paths: Paths) -> int:
    sel = _selection(args)
    out = _ask(paths, "show", selection=sel, **_access(args))
    if args.json:
        emit_json(out["files"])
        return EXIT_OK
    for f in out["files"]:
        print(printable(
            f"file {f['file_id']}  {f['source_name']}  recorder {f['recorder']}  officer"
            f" {f['officer_no']} {f['officer_name']}  unit {f['unit_no']}\n"
            f"  recorded {f.get('rec_start') or '-'} .. {f.get('rec_end') or '-'}"
            f"  size {f['size']}  blake3 {f['blake3']}\n"
            f"  stored at {f['path']}\n  tags {_tag_text(f.get('tags', []))}\n"
            f"  view recorded in the access register (ledger entry {f['access_seq']})"))
    return EXIT_OK


def cmd_export(args: argparse.Namespace, paths: Paths) -> int:
    sel = _selection(args)
    target = str(Path(args.target).absolute())
    out = _ask(paths, "export", timeout=EXPORT_TIMEOUT_S, selection=sel, target=target,
               **_access(args))
    if args.json:
        emit_json(out)
    else:
        print(printable(f"export {out['export_id']} complete and verified on the target:"
                        f" {out['files']} file(s) in {out['package']}"))
    return EXIT_OK


def cmd_preserve(args: argparse.Namespace, paths: Paths) -> int:
    sel = _selection(args)
    targets = [str(Path(t).absolute()) for t in args.target or []]
    out = _ask(paths, "preserve", timeout=EXPORT_TIMEOUT_S, selection=sel, targets=targets,
               requester=args.requester, approver=args.approver,
               purpose=args.purpose or "long-term preservation (regulation 000 §16)",
               case_no=args.case_no, case_name=args.case_name, activity=args.activity)
    if args.json:
        emit_json(out)
    else:
        print(printable(f"preserved {out['files']} file(s) in two verified copies:"
                        f" {out['packages'][0]} and {out['packages'][1]}; the files are on"
                        f" hold (ledger entry {out['ledger_seq']})"))
    return EXIT_OK


def cmd_register(args: argparse.Namespace, paths: Paths) -> int:
    """The access register: every view and export with requester, approver and purpose."""
    from agent.lifecycle import register
    from agent.store import ledger

    conn = open_db(paths)
    views = ledger.entries(conn, kind="accessed")
    try:
        exports = register.list_exports(conn)
    except sqlite3.OperationalError as exc:  # a database from before exports existed
        if "no such table" not in str(exc):
            raise
        exports = []
    rows: list[dict[str, Any]] = [
        {"kind": "view", "id": e.seq, "time_us": e.time_us, "state": "done",
             "requester": e.data.get("requester"), "approver": e.data.get("approver"),
             "purpose": e.data.get("purpose"), "files": [e.data.get("file_id")],
             "detail": e.data.get("stored_relpath")} for e in views]
    rows += [{"kind": x.kind, "id": x.id, "time_us": x.started_us, "state": x.state,
              "requester": x.requester, "approver": x.approver, "purpose": x.purpose,
              "files": list(x.file_ids),
              "detail": (x.detail or {}).get("reason") or f"{x.target}/{x.package}"}
             for x in exports]
    rows.sort(key=lambda r: r["time_us"])
    if args.json:
        emit_json(rows)
        return EXIT_OK
    print(table(["KIND", "ID", "TIME", "STATE", "REQUESTER", "APPROVER", "PURPOSE", "FILES",
                 "DETAIL"],
                [[r["kind"], r["id"], rfc3339(r["time_us"]), r["state"], r["requester"],
                  r["approver"], r["purpose"], ",".join(map(str, r["files"])), r["detail"]]
                 for r in rows]) if rows else "(no access recorded)")
    return EXIT_OK


def cmd_verify_export(args: argparse.Namespace, paths: Paths) -> int:
    from agent.lifecycle.package import verify_package
    from agent.store.signing import load_public_key

    key = load_public_key(args.key) if args.key else None
    if not args.package.is_dir():
        raise UsageError(f"{args.package} is not a package folder")
    check = verify_package(args.package, key)
    if args.json:
        emit_json({"ok": check.ok, "problems": list(check.problems),
                    "statement": check.statement})
    else:
        for p in check.problems:
            print(printable(f"PROBLEM {p}"))
        trust = "the dock key given" if key else "the key inside the package (integrity only)"
        print(f"{'OK' if check.ok else 'FAILED'}: signature checked with {trust};"
              f" {len((check.statement or {}).get('files', []))} file(s) re-hashed")
    return EXIT_OK if check.ok else EXIT_FINDING


def cmd_audit(args: argparse.Namespace, paths: Paths) -> int:
    if args.run_now or args.all:
        timeout = EXPORT_TIMEOUT_S
        run = _ask(paths, "audit-run", timeout=timeout, all=bool(args.all))
        if not args.json:
            print(f"audit run (cycle {run['cycle']}): {run['files_checked']} file(s),"
                  f" {human_bytes(run['bytes_checked'])} re-hashed,"
                  f" {len(run['problems'])} problem(s)"
                  f"{'; cycle complete' if run['cycle_complete'] else ''}")
    out = _ask(paths, "audit")
    if args.json:
        emit_json(out)
        return EXIT_OK if not (out.get("last_full_cycle") or {}).get("problems") else \
            EXIT_FINDING
    full = out.get("last_full_cycle")
    if full:
        print(f"last full cycle {full['cycle']}: {rfc3339(full['started_us'])} .."
              f" {rfc3339(full['finished_us'])}, {full['files_checked']} file(s)"
              f" ({human_bytes(full['bytes_checked'])}) in {full['runs']} run(s),"
              f" {len(full['problems'])} problem(s)")
        for p in full["problems"]:
            print(printable(f"  PROBLEM file {p['file_id']} {p['stored_relpath']}:"
                            f" {p['problem']}"))
    else:
        print("last full cycle: none yet")
    cur = out["current_cycle"]
    print(f"current cycle {cur['cycle']}: {cur['files_done']} done,"
          f" {cur['files_pending']} pending ({human_bytes(cur['bytes_pending'])});"
          f" {out['slice_files']} file(s) every {out['interval_s']:g} s,"
          f" whole store every {out['cycle_days']:g} day(s)"
          f"{'' if out['enabled'] else ' (schedule disabled)'}")
    return EXIT_OK if not (full or {}).get("problems") else EXIT_FINDING


def cmd_report(args: argparse.Namespace, paths: Paths) -> int:
    from agent.lifecycle import report

    tz_name = paths.settings.dock.timezone if paths.settings is not None else "UTC"
    try:
        period = report.parse_period(args.period, report.zone(tz_name))
    except report.PeriodError as exc:
        raise UsageError(str(exc)) from exc
    conn = open_db(paths)
    dock_id = paths.settings.dock.id if paths.settings is not None else "-"
    data = report.build(conn, period, dock_id=dock_id, timezone=tz_name,
                        officer=args.officer, recorder=args.recorder)
    if args.format == "json":
        text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    elif args.format == "csv":
        text = report.to_csv(data)
    else:
        text = report.to_html(data)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def add_parsers(sub: Subparsers) -> None:
    """The lifecycle commands, after dockctl's own."""
    _add_review(sub)
    _add_tagging(sub)
    _add_access(sub)


def _add_review(sub: Subparsers) -> None:
    """Supervision report and fixity audit."""
    p = sub.add_parser("report", help="supervision report per officer and recorder")
    p.add_argument("--period", required=True, help="2026-Q3, 2026-07, 2026 or A..B dates")
    p.add_argument("--officer")
    p.add_argument("--recorder")
    p.add_argument("--format", choices=("json", "csv", "html"), default="json")
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("audit", help="fixity audit: last full cycle, pending, run now")
    p.add_argument("--run-now", action="store_true", help="run the next slice now")
    p.add_argument("--all", action="store_true", help="run the rest of the cycle now")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_audit))


def _add_tagging(sub: Subparsers) -> None:
    """Stored files and their case tags."""
    p = sub.add_parser("files", help="stored files with their case tags and holds")
    _add_selection(p)
    p.add_argument("--case-no", help="only files tagged with this case number")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_files))

    p = sub.add_parser("tag", help="tag files (by id, or recorder/officer/time) with a case")
    _add_selection(p, positional=True)
    p.add_argument("--by", required=True, help="who tags (recorded in the ledger)")
    p.add_argument("--case-no")
    p.add_argument("--case-party")
    p.add_argument("--cause")
    p.add_argument("--activity")
    p.add_argument("--label", action="append", help="free label (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_tag))


def _add_access(sub: Subparsers) -> None:
    """Approved access to footage (views, exports, preservation) and its register."""
    for name, fn, helptext in (
        ("show", cmd_show, "view a stored file's record (an access-register entry)"),
        ("export", cmd_export, "approved export of files to a target directory"),
    ):
        p = sub.add_parser(name, help=helptext)
        _add_selection(p, positional=True)
        p.add_argument("--requester", help="who asks (the extractor)")
        p.add_argument("--approver", help="who approved (on the unit's list)")
        p.add_argument("--purpose", help="why (case, review, court...)")
        if name == "export":
            p.add_argument("--target", required=True, type=Path,
                           help="mounted target directory (USB disk, share)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_run(fn))

    p = sub.add_parser("preserve", help="two verified long-term copies on two targets")
    _add_selection(p, positional=True)
    p.add_argument("--target", action="append", type=Path,
                   help="a mounted target directory (give two, on different disks)")
    p.add_argument("--requester", help="who asks (the records officer)")
    p.add_argument("--approver", help="who approved (on the unit's list)")
    p.add_argument("--purpose", help="default: long-term preservation")
    p.add_argument("--case-no")
    p.add_argument("--case-name")
    p.add_argument("--activity")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(cmd_preserve))

    p = sub.add_parser("register", help="the access register: views and exports")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("verify-export", help="check an export package: signature and hashes")
    p.add_argument("package", type=Path)
    p.add_argument("--key", type=Path, help="the dock's public key (<key file>.pub)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify_export)
