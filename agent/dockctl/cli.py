"""dockctl: the technician's and supervisor's command line for a dock.

Live views (status, readiness) ask the running agent over its local control socket;
history (faults, ledger) and integrity checks (verify) read the state database read-only,
so they work even when the agent is stopped. Human-readable tables by default, `--json`
for scripts. Exit codes: 0 ok, 1 a finding (recorder not ready, verify problem),
2 usage or configuration error, 3 agent or state not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.control import ControlClientError, request
from agent.dockctl.common import (
    DEFAULT_CONFIG,
    EXIT_FINDING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Paths,
    Subparsers,
    Unreachable,
    UsageError,
    emit_json,
    open_db,
    rfc3339,
)
from agent.dockctl.firmware import add_parsers as add_firmware_parsers
from agent.dockctl.lifecycle import add_parsers as add_lifecycle_parsers
from agent.dockctl.render import human_bytes, human_duration, progress_bar, table
from agent.printable import printable


def _live(paths: Paths, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return request(paths.need_socket(), cmd, **args)
    except ControlClientError as exc:
        raise Unreachable(f"{exc}\n  check: systemctl status dock-agent") from exc


# --- status -----------------------------------------------------------------------------

def _status_text(status: dict[str, Any]) -> str:
    bays = status.get("bays", [])
    rows = []
    for bay in bays:
        offload = _offload_cell(bay)
        readiness = bay.get("readiness") or {}
        rows.append([
            bay.get("bay"), bay.get("serial") or bay.get("key"), bay.get("officer_no") or "-",
            bay.get("state"), _pct(bay.get("battery_percent")),
            readiness.get("verdict", "-"), offload,
        ])
    head = (
        f"dock {printable(status.get('dock_id'))}  agent {printable(status.get('version'))}  "
        f"broker {'connected' if status.get('broker_connected') else 'offline'}  "
        f"outbox {status.get('outbox_depth', '-')}  "
        f"store free {human_bytes(status.get('store_free_bytes'))}"
    )
    if not rows:
        return head + "\n(no recorders docked)"
    from agent.dockctl.watch import COLUMNS

    return head + "\n" + table(COLUMNS, rows)


def _offload_cell(bay: dict[str, Any]) -> str:
    result = bay.get("offload_result")
    if bay.get("state") != "offloading" and isinstance(result, dict):
        text = f"{result.get('outcome')}: {result.get('stored', 0)} stored"
        for key in ("already_stored", "failed", "refused", "late"):
            if result.get(key):
                text += f", {result[key]} {key.replace('_', ' ')}"
        return text
    prog = bay.get("offload") or {}
    done, total = int(prog.get("bytes_done", 0)), int(prog.get("bytes_total", 0))
    if not total:
        return "-"
    cell = progress_bar(done, total)
    if prog.get("rate_bps"):
        cell += f" {human_bytes(prog['rate_bps'])}/s ETA {human_duration(prog.get('eta_s'))}"
    return cell


def _pct(value: object) -> str:
    return "-" if value is None else f"{float(str(value)):.0f}%"


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    while True:
        status = _live(paths, "status")
        if args.json:
            emit_json(status)
        else:
            if args.watch:
                sys.stdout.write("\x1b[2J\x1b[H")
            print(_status_text(status))
        if not args.watch:
            return EXIT_OK
        sys.stdout.flush()
        time.sleep(args.interval)


def cmd_watch(args: argparse.Namespace, paths: Paths) -> int:
    from agent.dockctl import watch

    paths.need_socket()
    plain = True if args.plain else None
    return watch.run(lambda: _live(paths, "status"), paths.db, interval_s=args.interval,
                     plain=plain, plain_interval_s=args.plain_interval,
                     until_done=args.until_done, timeout_s=args.timeout, events=args.events)


# --- readiness --------------------------------------------------------------------------

def cmd_readiness(args: argparse.Namespace, paths: Paths) -> int:
    report = _live(paths, "readiness")
    recorders = report.get("recorders", [])
    if args.json:
        emit_json(report)
    else:
        rows = []
        for r in recorders:
            reasons = "; ".join(x["message"] for x in r.get("reasons", [])) or "-"
            eta = human_duration(r.get("eta_s")) if r.get("eta_s") is not None else "-"
            rows.append([r.get("bay"), r.get("serial"), r.get("officer") or "-",
                         r.get("verdict"), reasons, eta])
        if rows:
            print(table(["BAY", "RECORDER", "OFFICER", "VERDICT", "REASONS", "ETA"], rows))
        else:
            print("(no recorders docked)")
    all_ready = all(r.get("verdict") == "READY" for r in recorders)
    return EXIT_OK if all_ready else EXIT_FINDING


# --- faults, ledger, verify (read-only database) ----------------------------------------

def _since(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(f"not an ISO date/time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1e6)


def cmd_faults(args: argparse.Namespace, paths: Paths) -> int:
    from agent.store import faults

    conn = open_db(paths)
    items = faults.list_faults(
        conn, recorder=args.recorder, officer=args.officer, bay=args.bay, code=args.code,
        since_us=_since(args.since), until_us=_since(args.until),
        include_cleared=not args.open,
    )
    if args.json:
        emit_json([_fault_dict(f) for f in items])
        return EXIT_OK
    rows = [[f.id, rfc3339(f.opened_us), f.code, f.severity, f.recorder or "-", f.officer or "-",
             f.bay or "-", f.reason,
             "open" if f.cleared_us is None else f"cleared {rfc3339(f.cleared_us)}"]
            for f in items]
    print(table(["ID", "OPENED", "CODE", "SEV", "RECORDER", "OFFICER", "BAY", "REASON", "STATE"],
                rows) if rows else "(no faults)")
    return EXIT_OK


def _fault_dict(f: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(f)


def cmd_ledger(args: argparse.Namespace, paths: Paths) -> int:
    from agent.store import ledger

    if args.action == "export":
        return _ledger_export(args, paths)
    conn = open_db(paths)
    entries = ledger.entries(
        conn, recorder=args.device, officer=args.officer, kind=args.kind,
        since_us=_since(args.since), until_us=_since(args.until), limit=args.limit,
    )
    if args.json:
        emit_json([e.as_event() for e in entries])
        return EXIT_OK
    rows = [[e.seq, rfc3339(e.time_us), e.kind, e.recorder or "-", e.officer or "-", e.bay or "-",
             _summary(e.data)] for e in entries]
    print(table(["SEQ", "TIME", "KIND", "RECORDER", "OFFICER", "BAY", "DETAIL"], rows)
          if rows else "(no entries)")
    return EXIT_OK


def _ledger_export(args: argparse.Namespace, paths: Paths) -> int:
    """The whole ledger as a portable bundle for `dock-verify` (see docs/custody-store.md)."""
    from agent.custody.bundle import export_bundle
    from agent.store.db import DatabaseError
    from agent.store.errors import SigningError
    from agent.store.signing import load_public_key

    if args.out is None:
        raise UsageError("ledger export needs --out FILE")
    if args.pubkey is not None:
        try:
            key = load_public_key(args.pubkey)
        except SigningError as exc:
            raise UsageError(str(exc)) from exc
    else:
        key = _trusted_key(paths)
        if key is None:
            raise UsageError("no public key: pass --config or --pubkey")
    db = paths.need_db()
    if paths.socket is not None:
        # Sign the tail first, so the bundle is covered up to its last entry. The agent
        # may be stopped: then its shutdown checkpoint already covers the tail.
        with contextlib.suppress(ControlClientError):
            request(paths.socket, "checkpoint")
    dock_id = paths.settings.dock.id if paths.settings is not None else _dock_id(paths)
    try:
        summary = export_bundle(db, key, dock_id, args.out)
    except DatabaseError as exc:
        raise Unreachable(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot write {args.out}: {exc}") from exc
    if args.json:
        emit_json(summary)
    else:
        print(f"exported {summary['entries']} entries (seq {summary['first_seq']}-"
              f"{summary['last_seq']}), {summary['checkpoints']} signed checkpoints"
              f" (last seq {summary['last_signed_seq']}) to {summary['path']}")
        print(f"dock key fingerprint {summary['fingerprint']}")
        print(f"check anywhere with: dock-verify --fingerprint {summary['fingerprint']}"
              f" {summary['path']} [STORE]")
    return EXIT_OK


def _dock_id(paths: Paths) -> str:
    conn = open_db(paths)
    try:
        row = conn.execute("SELECT dock_id FROM ledger ORDER BY seq LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        raise UsageError("the ledger is empty: nothing to export")
    return str(row[0])


def _summary(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def cmd_battery(args: argparse.Namespace, paths: Paths) -> int:
    """A recorder's battery history across dockings, and its pack's trend."""
    from agent.compliance.readiness import learned_charge_rate_per_s
    from agent.store.recorder_history import battery_history

    conn = open_db(paths)
    rows = battery_history(conn, args.recorder, since_us=_since(args.since), limit=args.limit)
    rate = learned_charge_rate_per_s([(r.time_us / 1e6, r.percent, r.charging) for r in rows])
    trend = _pack_trend(rows)
    if args.json:
        emit_json({"recorder": args.recorder, "samples": [r.as_dict() for r in rows],
                    "charge_rate_percent_per_min": None if rate is None else rate * 60,
                    "trend": trend})
        return EXIT_OK
    if not rows:
        print(f"(no battery history for {args.recorder})")
        return EXIT_OK
    print(table(["TIME", "BATT", "CHARGING", "mV", "TEMP", "CYCLES", "HEALTH"], [
        [rfc3339(r.time_us), f"{r.percent:.0f}%", "yes" if r.charging else "no",
         _dash(r.millivolts), _dash(r.temperature_c), _dash(r.cycle_count),
         "-" if r.health_percent is None else f"{r.health_percent}%"] for r in rows]))
    if rate is not None:
        print(f"charge rate {rate * 60:.2f} %/min (from this pack's history)")
    if trend is not None:
        print(f"health {trend['health_from']}% -> {trend['health_to']}% over"
              f" {trend['cycles']} cycles ({trend['days']:.0f} days)")
    return EXIT_OK


def _dash(v: object) -> str:
    return "-" if v is None else str(v)


def _pack_trend(rows: Sequence[Any]) -> dict[str, Any] | None:
    known = [r for r in rows if r.health_percent is not None]
    if len(known) < 2:
        return None
    a, b = known[0], known[-1]
    cycles = (b.cycle_count or 0) - (a.cycle_count or 0)
    return {"health_from": a.health_percent, "health_to": b.health_percent,
            "cycles": cycles, "days": (b.time_us - a.time_us) / 86400e6}


def cmd_uploads(args: argparse.Namespace, paths: Paths) -> int:
    import sqlite3

    from agent.upload import queue

    conn = open_db(paths)
    try:
        backlog = queue.backlog(conn)
        jobs = queue.jobs(conn)
        hour_ago = int(datetime.now(UTC).timestamp() * 1e6) - 3_600_000_000
        last_hour = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(e.size), 0) FROM upload_queue q JOIN evidence_files e"
            " ON e.id = q.file_id WHERE q.uploaded_us >= ?", (hour_ago,)).fetchone()
        paths_by_id = dict(conn.execute("SELECT id, stored_relpath FROM evidence_files"))
    except sqlite3.OperationalError as exc:
        raise Unreachable(f"no upload queue in this database ({exc})") from exc
    shown = [j for j in jobs if args.all or j.state != "uploaded"]
    if args.json:
        from dataclasses import asdict

        emit_json({"backlog": asdict(backlog),
                    "uploaded_last_hour": {"files": last_hour[0], "bytes": last_hour[1]},
                    "files": [{**asdict(j), "stored_relpath": paths_by_id.get(j.file_id)}
                              for j in shown]})
        return EXIT_OK
    print(f"backlog: {backlog.files} files, {backlog.bytes} bytes; uploaded: "
          f"{backlog.uploaded_files}; conflicts: {backlog.conflicts}; last hour: "
          f"{last_hour[0]} files, {last_hour[1] / 3600:.0f} B/s")
    if backlog.last_error:
        print(f"last error: {printable(backlog.last_error)}")
    rows = [[j.file_id, j.state, printable(paths_by_id.get(j.file_id, "?")), j.attempts,
             rfc3339(j.next_try_us) if j.next_try_us else "now",
             rfc3339(j.uploaded_us) if j.uploaded_us else "-", printable(j.last_error or "-")]
            for j in shown]
    print(table(["FILE", "STATE", "STORED AS", "TRIES", "NEXT TRY", "UPLOADED", "LAST ERROR"],
                rows) if rows else "(nothing waiting)")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, paths: Paths) -> int:
    from agent.store import verify

    conn = open_db(paths)
    reports = [verify.verify_ledger(conn, _trusted_key(paths))]
    if paths.store is not None:
        reports.append(verify.verify_store(conn, paths.store, deep=args.deep))
    elif args.deep:
        raise UsageError("--deep needs the evidence store: pass --config or --store")
    problems = [p for r in reports for p in r.problems]
    summary = {
        "ok": not problems,
        "entries_checked": reports[0].entries_checked,
        "files_checked": sum(r.files_checked for r in reports),
        "deep": bool(args.deep),
        "problems": [{"kind": p.kind, "where": p.where, "detail": p.detail} for p in problems],
    }
    if args.json:
        emit_json(summary)
    else:
        for p in problems:
            print(printable(f"PROBLEM {p.kind} at {p.where}: {p.detail}"))
        print(
            f"{'OK' if not problems else 'FAILED'}: {summary['entries_checked']} ledger entries,"
            f" {summary['files_checked']} stored files"
            f"{' re-hashed' if args.deep else ' checked'}, {len(problems)} problem(s)"
        )
    return EXIT_OK if not problems else EXIT_FINDING


def _trusted_key(paths: Paths) -> Any:
    """The dock's public key from its key file: a rewritten chain signed by another key fails."""
    from agent.store.signing import load_public_key, public_key_path

    if paths.settings is None:
        return None
    pub = public_key_path(paths.settings.key_file)
    if not pub.exists():
        raise UsageError(f"public key {pub} not found: has the agent ever started?")
    return load_public_key(pub)


def cmd_fleet(args: argparse.Namespace, paths: Paths) -> int:
    from agent.mqtt.checkpoints import CheckpointStateError
    from agent.mqtt.errors import MqttError
    from agent.mqtt.fleet import fleet_settings, run_fleet

    try:
        settings = fleet_settings(
            args.broker, tls=args.tls, ca_file=args.ca_file, cert_file=args.cert_file,
            key_file=args.key_file, topic_prefix=args.prefix,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        model = asyncio.run(run_fleet(settings, json=args.json, once=args.once,
                                      settle_s=args.wait,
                                      checkpoint_state=args.checkpoint_state))
    except CheckpointStateError as exc:
        raise UsageError(str(exc)) from exc
    except MqttError as exc:
        raise Unreachable(f"broker {args.broker}: {exc}") from exc
    # a custody alarm (a dock's ledger rolled back or rewritten) is a finding for scripts
    return EXIT_FINDING if any(model.checkpoints.alarms.values()) else EXIT_OK


# --- argument parsing -------------------------------------------------------------------



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help=f"agent config (default {DEFAULT_CONFIG})")
    parser.add_argument("--socket", type=Path, help="control socket (overrides the config)")
    parser.add_argument("--db", type=Path, help="state database (overrides the config)")
    parser.add_argument("--store", type=Path, help="evidence store (overrides the config)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_live_views(sub)
    _add_history(sub)
    _add_checks(sub)
    _add_fleet(sub)

    add_lifecycle_parsers(sub)
    add_firmware_parsers(sub)
    return parser


def _add_live_views(sub: Subparsers) -> None:
    """Views of the running agent, over its control socket."""
    p = sub.add_parser("status", help="bays, recorders, offload progress, readiness")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="live view: bays, progress, readiness, custody events")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    p.add_argument("--plain", action="store_true",
                   help="periodic snapshots instead of redrawing (default when not a terminal)")
    p.add_argument("--plain-interval", type=float, default=5.0,
                   help="with --plain: at most one snapshot per this many seconds")
    p.add_argument("--events", type=int, default=8, help="custody ledger lines to show")
    p.add_argument("--until-done", type=int, metavar="N",
                   help="exit once N recorders are docked and none is being offloaded")
    p.add_argument("--timeout", type=float, help="with --until-done: give up (exit 1) after S s")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("readiness", help="pre-shift readiness per docked recorder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_readiness)


def _add_history(sub: Subparsers) -> None:
    """Records read from the state database (they work while the agent is stopped)."""
    p = sub.add_parser("faults", help="fault records (open and cleared)")
    p.add_argument("--open", action="store_true", help="only faults still open")
    p.add_argument("--recorder")
    p.add_argument("--officer")
    p.add_argument("--bay")
    p.add_argument("--code")
    p.add_argument("--since", help="ISO date/time (UTC unless it says otherwise)")
    p.add_argument("--until")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_faults)

    p = sub.add_parser("ledger", help="custody ledger entries; `ledger export` for dock-verify")
    p.add_argument("action", nargs="?", choices=["list", "export"], default="list",
                   help="list entries (default) or export a portable bundle")
    p.add_argument("--out", type=Path, help="with export: the bundle file to write")
    p.add_argument("--pubkey", type=Path,
                   help="with export: the dock's public key file (default: from the config)")
    p.add_argument("--officer")
    p.add_argument("--device", help="recorder serial")
    p.add_argument("--kind")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("battery", help="a recorder's battery history and its pack's trend")
    p.add_argument("recorder", help="recorder serial")
    p.add_argument("--since", help="ISO date/time (UTC unless it says otherwise)")
    p.add_argument("--limit", type=int, default=200, help="newest N samples")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_battery)


def _add_checks(sub: Subparsers) -> None:
    """Integrity of the ledger and store, and the upload queue."""
    p = sub.add_parser("verify", help="check the ledger chain, signatures and the store")
    p.add_argument("--deep", action="store_true", help="re-hash every stored file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("uploads", help="upload queue: backlog, rates, last error")
    p.add_argument("--all", action="store_true", help="also list uploaded files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_uploads)


def _add_fleet(sub: Subparsers) -> None:
    """The fleet view, from the broker rather than this dock."""
    p = sub.add_parser("fleet", help="live view of a fleet of docks from the broker")
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file", type=Path)
    p.add_argument("--cert-file", type=Path)
    p.add_argument("--key-file", type=Path)
    p.add_argument("--prefix", default="dock/v1")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--wait", type=float, default=2.0, help="with --once: seconds to collect")
    p.add_argument("--checkpoint-state", type=Path, metavar="FILE",
                   help="remember each dock's last signed checkpoint here, so a ledger"
                        " rolled back between runs is still an alarm")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fleet)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        paths = Paths(args)
        code: int = args.func(args, paths)
    except UsageError as exc:
        print(f"dockctl: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"dockctl: {printable(exc)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: command modules import
    # `agent.dockctl.cli`, and its exception classes must be the ones main() catches.
    from agent.dockctl.cli import main as _main

    sys.exit(_main())
