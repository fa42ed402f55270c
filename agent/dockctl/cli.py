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
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.control import ControlClientError, request
from agent.dockctl.render import human_bytes, human_duration, progress_bar, table
from agent.printable import printable

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_CONFIG = Path("/etc/dock-agent/dock-agent.toml")


class Paths:
    """Where the agent's socket, database and store are, from the config or flags."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.socket: Path | None = args.socket
        self.db: Path | None = args.db
        self.store: Path | None = args.store
        self.settings: Any = None
        config: Path | None = args.config
        if config is None and DEFAULT_CONFIG.exists() and not (self.socket and self.db):
            config = DEFAULT_CONFIG
        if config is not None:
            from agent.config import ConfigError, load_config

            try:
                settings = load_config(config)
            except ConfigError as exc:
                raise UsageError(str(exc)) from exc
            self.settings = settings
            self.socket = self.socket or settings.control_socket
            self.db = self.db or settings.db_path
            self.store = self.store or settings.dock.store_dir

    def need_socket(self) -> Path:
        if self.socket is None:
            raise UsageError("no control socket: pass --config or --socket")
        return self.socket

    def need_db(self) -> Path:
        if self.db is None:
            raise UsageError("no state database: pass --config or --db")
        return self.db


class UsageError(Exception):
    pass


class Unreachable(Exception):
    pass


def _live(paths: Paths, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        return request(paths.need_socket(), cmd, **args)
    except ControlClientError as exc:
        raise Unreachable(f"{exc}\n  check: systemctl status dock-agent") from exc


def _emit_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def _ts(us: int | float | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- status -----------------------------------------------------------------------------

def _status_text(status: dict[str, Any]) -> str:
    bays = status.get("bays", [])
    rows = []
    for bay in bays:
        offload = _offload_cell(bay)
        readiness = bay.get("readiness") or {}
        rows.append([
            bay.get("bay"), bay.get("serial") or bay.get("key"), bay.get("officer_no") or "-",
            bay.get("state"), _pct(bay.get("battery_percent")), offload,
            readiness.get("verdict", "-"),
        ])
    head = (
        f"dock {printable(status.get('dock_id'))}  agent {printable(status.get('version'))}  "
        f"broker {'connected' if status.get('broker_connected') else 'offline'}  "
        f"outbox {status.get('outbox_depth', '-')}  "
        f"store free {human_bytes(status.get('store_free_bytes'))}"
    )
    if not rows:
        return head + "\n(no recorders docked)"
    return head + "\n" + table(
        ["BAY", "RECORDER", "OFFICER", "STATE", "BATT", "OFFLOAD", "READINESS"], rows
    )


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
            _emit_json(status)
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
        _emit_json(report)
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

def _open_db(paths: Paths) -> Any:
    from agent.store.db import DatabaseError, open_readonly

    try:
        return open_readonly(paths.need_db())
    except DatabaseError as exc:
        raise Unreachable(str(exc)) from exc


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

    conn = _open_db(paths)
    items = faults.list_faults(
        conn, recorder=args.recorder, officer=args.officer, bay=args.bay, code=args.code,
        since_us=_since(args.since), until_us=_since(args.until),
        include_cleared=not args.open,
    )
    if args.json:
        _emit_json([_fault_dict(f) for f in items])
        return EXIT_OK
    rows = [[f.id, _ts(f.opened_us), f.code, f.severity, f.recorder or "-", f.officer or "-",
             f.bay or "-", f.reason,
             "open" if f.cleared_us is None else f"cleared {_ts(f.cleared_us)}"]
            for f in items]
    print(table(["ID", "OPENED", "CODE", "SEV", "RECORDER", "OFFICER", "BAY", "REASON", "STATE"],
                rows) if rows else "(no faults)")
    return EXIT_OK


def _fault_dict(f: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(f)


def cmd_ledger(args: argparse.Namespace, paths: Paths) -> int:
    from agent.store import ledger

    conn = _open_db(paths)
    entries = ledger.entries(
        conn, recorder=args.device, officer=args.officer, kind=args.kind,
        since_us=_since(args.since), until_us=_since(args.until), limit=args.limit,
    )
    if args.json:
        _emit_json([e.as_event() for e in entries])
        return EXIT_OK
    rows = [[e.seq, _ts(e.time_us), e.kind, e.recorder or "-", e.officer or "-", e.bay or "-",
             _summary(e.data)] for e in entries]
    print(table(["SEQ", "TIME", "KIND", "RECORDER", "OFFICER", "BAY", "DETAIL"], rows)
          if rows else "(no entries)")
    return EXIT_OK


def _summary(data: Mapping[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def cmd_verify(args: argparse.Namespace, paths: Paths) -> int:
    from agent.store import verify

    conn = _open_db(paths)
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
        _emit_json(summary)
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
        asyncio.run(run_fleet(settings, json=args.json, once=args.once, settle_s=args.wait))
    except MqttError as exc:
        raise Unreachable(f"broker {args.broker}: {exc}") from exc
    return EXIT_OK


# --- argument parsing -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockctl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help=f"agent config (default {DEFAULT_CONFIG})")
    parser.add_argument("--socket", type=Path, help="control socket (overrides the config)")
    parser.add_argument("--db", type=Path, help="state database (overrides the config)")
    parser.add_argument("--store", type=Path, help="evidence store (overrides the config)")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("ledger", help="custody ledger entries")
    p.add_argument("--officer")
    p.add_argument("--device", help="recorder serial")
    p.add_argument("--kind")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("verify", help="check the ledger chain, signatures and the store")
    p.add_argument("--deep", action="store_true", help="re-hash every stored file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("fleet", help="live view of a fleet of docks from the broker")
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca-file", type=Path)
    p.add_argument("--cert-file", type=Path)
    p.add_argument("--key-file", type=Path)
    p.add_argument("--prefix", default="dock/v1")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--wait", type=float, default=2.0, help="with --once: seconds to collect")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fleet)

    from agent.dockctl.lifecycle import add_parsers

    add_parsers(sub)
    return parser


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
