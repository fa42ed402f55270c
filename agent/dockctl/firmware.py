"""dockctl firmware: stage a signed package (`add`), and this dock's recorders against
firmware policy with transfers in flight (`status`). Both ask the running agent, which
verifies and ledgers a package before it is staged."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.control import ControlClientError, request
from agent.dockctl.common import EXIT_FINDING, EXIT_OK, Paths, Unreachable, emit_json
from agent.dockctl.render import human_bytes, table
from agent.printable import printable

REFUSALS = ("StagingError", "PolicyError", "KeyFileError")
ADD_TIMEOUT_S = 600.0  # verifying and copying a 256 MiB package on an SD card


class Refused(Exception):
    pass


def _ask(paths: Paths, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    try:
        return request(paths.need_socket(), cmd, timeout=timeout, **args)
    except ControlClientError as exc:
        name, _, rest = str(exc).partition(":")
        if name in REFUSALS:
            raise Refused(rest.strip()) from exc
        raise Unreachable(f"{exc}\n  check: systemctl status dock-agent") from exc


def cmd_add(args: argparse.Namespace, paths: Paths) -> int:
    package = Path(args.package).absolute()
    try:
        out = _ask(paths, "firmware-add", timeout=ADD_TIMEOUT_S, package=str(package))
    except Refused as exc:
        print(printable(f"dockctl: firmware package refused: {exc}"), file=sys.stderr)
        return EXIT_FINDING
    if args.json:
        emit_json(out)
        return EXIT_OK
    what = "staged" if out.get("newly_staged") else "already staged"
    print(printable(f"{what}: firmware {out.get('version')} for"
                    f" {', '.join(map(str, out.get('models') or []))}"
                    f" ({human_bytes(int(out.get('size') or 0))}, BLAKE3 {out.get('blake3')},"
                    f" key {out.get('key_id')}, ledger #{out.get('ledger_seq')})"))
    return EXIT_OK


def _progress_cell(r: dict[str, Any]) -> str:
    p = r.get("progress")
    if p:
        done, size = int(p.get("durable_offset") or 0), int(p.get("size") or 0)
        rate = int(p.get("rate_bps") or 0)
        return f"{p.get('percent')}% {human_bytes(done)}/{human_bytes(size)} {human_bytes(rate)}/s"
    a = r.get("attempt")
    if a:
        return f"{a.get('state')} {human_bytes(int(a.get('bytes_done') or 0))} (resumable)"
    return "-"


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    out = _ask(paths, "firmware-status")
    if args.json:
        emit_json(out)
    else:
        recorders = out.get("recorders") or []
        print(table(["BAY", "RECORDER", "MODEL", "RUNNING", "TARGET", "ALLOWED", "STATE",
                     "PROGRESS", "WHY"],
                    [[r.get("bay"), r.get("serial"), r.get("model"), r.get("running"),
                      r.get("target") or "-", "yes" if r.get("allowed") else "NO", r.get("state"),
                      _progress_cell(r), r.get("reason") or ""] for r in recorders]))
        pkgs = out.get("packages") or []
        print()
        print(table(["STAGED", "MODELS", "SIZE", "MIN_FROM", "MAX_FROM", "BLAKE3"],
                    [[p.get("version"), ",".join(p.get("models") or []),
                      human_bytes(int(p.get("size") or 0)), p.get("min_from") or "-",
                      p.get("max_from") or "-", str(p.get("blake3"))[:16]] for p in pkgs]))
    bad = [r for r in out.get("recorders") or [] if not r.get("allowed")]
    return EXIT_FINDING if bad else EXIT_OK


def add_parsers(sub: Any) -> None:
    fw = sub.add_parser("firmware", help="recorder firmware: stage packages, policy status")
    fsub = fw.add_subparsers(dest="firmware_cmd", required=True)
    p = fsub.add_parser("add", help="verify and stage a signed firmware package (.dfw)")
    p.add_argument("package", help="package file (readable by the agent)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)
    p = fsub.add_parser("status", help="docked recorders against policy; transfers in flight")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
