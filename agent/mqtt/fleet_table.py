"""The fleet view as a terminal table: docks, docked recorders, refused messages, faults
and custody alarms. Every string in it came from the network: each entry stays one line
and no control character reaches the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.printable import printable


def render_table(snapshot: Mapping[str, Any]) -> str:
    """The fleet as a terminal table (what `dockctl fleet` shows without --json)."""
    lines = [f"{'DOCK':<14} {'STATE':<8} {'OUTBOX':>7} {'DROPPED':>7} {'FAULTS':>6} "
             f"{'MISSING':>7} {'LOST':>5}"]
    for d in snapshot["docks"]:
        lines.append(f"{d['dock_id']:<14} {'online' if d['online'] else 'OFFLINE':<8} "
                     f"{_dash(d['outbox_depth']):>7} {_dash(d['dropped']):>7} "
                     f"{len(d['open_faults']):>6} {len(d['missing_seqs']):>7} "
                     f"{len(d['lost_seqs']):>5}")
    lines.append("")
    lines.append(f"{'DOCK':<14} {'RECORDER':<12} {'BAY':<4} {'OFFICER':<10} {'BATT':>5} "
                 f"{'READINESS':<10} {'LAST OFFLOAD':<25} NOTE")
    for d in snapshot["docks"]:
        for r in d["recorders"]:
            if not r["docked"]:
                continue
            batt = "-" if r["battery_percent"] is None else f"{r['battery_percent']:.0f}%"
            note = "stale" if r["stale"] else ", ".join(r["reasons"])
            if r["progress"] and not r["stale"]:
                p = r["progress"]
                note = (note + " " if note else "") + (
                    f"offload {p.get('files_done', '?')}/{p.get('files_total', '?')}")
            lines.append(f"{d['dock_id']:<14} {r['serial']:<12} {r['bay']:<4} "
                         f"{r['officer'] or '-':<10} {batt:>5} {r['readiness']:<10} "
                         f"{r['last_offload'] or '-':<25} {note}")
    for d in snapshot["docks"]:
        bad = d["last_invalid"]
        if bad is not None:
            lines.append(f"INVALID {d['dock_id']} {d['invalid_messages']} message(s) refused;"
                         f" last on {bad['topic']}: {bad['error']}")
    for d in snapshot["docks"]:
        for f in d["open_faults"]:
            lines.append(f"FAULT {d['dock_id']} {f['subject'] or '-'} {f['code']} "
                         f"{f['time'] or ''} {f['message'] or ''}".rstrip())
    for d in snapshot["docks"]:
        for a in d["custody_alarms"]:
            lines.append(f"CUSTODY ALARM {d['dock_id']} {a['alarm']}: {a['detail']}")
    # Every string here came from the network: each entry is one line, and no control
    # character reaches the terminal.
    return "\n".join(printable(line) for line in lines) + "\n"


def _dash(v: object) -> str:
    return "-" if v is None else str(v)
