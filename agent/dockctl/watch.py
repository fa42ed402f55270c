"""`dockctl watch`: a live view of the dock for a terminal, or periodic snapshots for a log.

On a terminal the view is redrawn in place with plain ANSI (home, clear to end of screen);
when stdout is not a terminal (CI, a pipe) a snapshot is printed only when something other
than the clock changed, at most every `plain_interval_s`. With `until_done=N` it returns
once N recorders are docked and none is still being offloaded, which lets a script wait
for a story to finish without guessing how long copying takes.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from agent.dockctl.render import (
    display_width,
    human_bytes,
    human_duration,
    progress_bar,
    table,
)
from agent.printable import printable

HOME_CLEAR, HIDE_CURSOR, SHOW_CURSOR = "\x1b[H\x1b[J", "\x1b[?25l", "\x1b[?25h"
WIDE = 110
BUSY_STATES = frozenset({"detected", "authenticated", "identified", "clock_checked",
                         "status_read", "storage_unlocked", "mounted", "offloading"})


@dataclass(frozen=True)
class Snapshot:
    """What one frame shows: the agent's status (None while it is unreachable) and recent
    custody events (time, text), newest last."""

    status: Mapping[str, Any] | None
    events: Sequence[tuple[float, str]]
    error: str | None = None


def offload_cell(bay: Mapping[str, Any], compact: bool = False) -> str:
    prog = bay.get("offload") or {}
    done, total = int(prog.get("bytes_done", 0) or 0), int(prog.get("bytes_total", 0) or 0)
    if bay.get("state") == "offloading" and total:
        cell = progress_bar(done, total, width=10 if compact else 24)
        if prog.get("rate_bps") and not compact:
            cell += f" {human_bytes(prog['rate_bps'])}/s"
        return cell
    result = bay.get("offload_result")
    if isinstance(result, Mapping):
        if compact:
            # e.g. "complete: 6 new, 2 old" (fits 80 columns with the rest); files that
            # failed are named under "Why not ready" (they are still on the recorder).
            text = f"{result.get('outcome')}: {result.get('stored', 0)} new"
            if result.get("already_stored"):
                text += f", {result['already_stored']} old"
            return text
        text = f"{result.get('outcome')}: {result.get('stored', 0)} stored"
        for key in ("already_stored", "failed", "refused", "late"):
            if result.get(key):
                text += f", {result[key]} {key.replace('_', ' ')}"
        return text
    return "-"


# Session states in at most 10 cells, for an 80-column terminal.
SHORT_STATES = {"authenticated": "auth", "clock_checked": "clock ok", "status_read": "status",
                "storage_unlocked": "unlocked"}
# The bay table's columns, in the order `dockctl status` and `dockctl watch` both use:
# what is cut at the right edge of a narrow terminal matters least.
COLUMNS = ("BAY", "RECORDER", "OFFICER", "STATE", "BATT", "READINESS", "OFFLOAD")


def _officer(bay: Mapping[str, Any], compact: bool) -> str:
    number, name = bay.get("officer_no"), bay.get("officer_name")
    if not number:
        return "(none)"
    return f"{number} {name}" if name and not compact else str(number)


def _pct(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{float(value):.0f}%"


def render(snap: Snapshot, now: float | None = None, columns: int | None = None) -> str:
    """The frame as text (pure: the tests call it with canned snapshots). On a terminal
    narrower than WIDE columns it leaves out officer names and transfer rates; the columns
    are ordered so that what is cut at the right edge matters least."""
    compact = columns is not None and columns < WIDE
    stamp = datetime.fromtimestamp(now if now is not None else time.time()).strftime("%H:%M:%S")
    status = snap.status
    if status is None:
        return f"{stamp}  waiting for the agent ({printable(snap.error or 'not reachable')})"
    gap = "  " if compact else "   "
    broker = "connected" if status.get("broker_connected") else "offline"
    store = "free" if compact else "evidence store free"
    lines = [
        f"dock {printable(status.get('dock_id'))}{gap}{stamp}{gap}broker {broker}{gap}"
        f"outbox {status.get('outbox_depth', '-')}{gap}"
        f"{store} {human_bytes(status.get('store_free_bytes'))}",
        "",
    ]
    bays = sorted(status.get("bays", []), key=lambda b: str(b.get("bay")))
    if bays:
        rows = [[b.get("bay"), b.get("serial") or b.get("key"), _officer(b, compact),
                 SHORT_STATES.get(str(b.get("state")), b.get("state")) if compact
                 else b.get("state"), _pct(b.get("battery_percent")),
                 (b.get("readiness") or {}).get("verdict", "-"), offload_cell(b, compact)]
                for b in bays]
        lines.append(table(COLUMNS, rows))
    else:
        lines.append("(no recorders docked)")
    reasons = []
    for b in bays:
        readiness = b.get("readiness") or {}
        why = "; ".join(str(r.get("message")) for r in readiness.get("reasons", []))
        if why:
            eta = readiness.get("eta_s")
            if eta is not None:
                why += f" (ready in about {human_duration(eta)})"
            line = printable(f"  bay {b.get('bay')} {b.get('serial') or b.get('key')}: "
                             f"{readiness.get('verdict')}: {why}")
            if compact and columns is not None:  # wrapped, not cut at the edge
                reasons += textwrap.wrap(line, columns, subsequent_indent="      ",
                                         drop_whitespace=True) or [line]
            else:
                reasons.append(line)
    if reasons:
        lines += ["", "Why not ready:", *reasons]
    if snap.events:
        lines += ["", "Custody ledger (latest):"]
        lines += [f"  {datetime.fromtimestamp(t).strftime('%H:%M:%S')}  {printable(text)}"
                  for t, text in snap.events]
    return "\n".join(lines)


def done(status: Mapping[str, Any] | None, expect: int) -> bool:
    """At least `expect` recorders docked, each past its offload (or never needing one,
    or refused before it)."""
    if status is None:
        return False
    # A session that just ended by removal can still be listed for a moment (its cleanup
    # runs): that recorder is not docked, whatever its last offload result says.
    bays = [b for b in status.get("bays", []) if b.get("state") != "removed"]
    return len(bays) >= expect and all(
        b.get("state") not in BUSY_STATES
        and (b.get("offload_result") is not None or b.get("state") == "failed")
        for b in bays
    )


def ledger_events(db: Path | None, limit: int) -> list[tuple[float, str]]:
    """The newest custody entries as one-line texts; none while the database is absent."""
    if db is None or limit <= 0 or not db.exists():
        return []
    from agent.store import ledger
    from agent.store.db import DatabaseError, open_readonly

    try:
        conn = open_readonly(db)
    except DatabaseError:
        return []
    try:
        entries = ledger.entries(conn, limit=limit, newest_first=True)
    except Exception:  # a schema still being created: try again next frame
        return []
    finally:
        conn.close()
    out = []
    for e in reversed(entries):
        who = " ".join(x for x in (f"bay {e.bay}" if e.bay else "", e.recorder or "") if x)
        out.append((e.time_us / 1e6, f"{e.kind:<14} {who}{_detail(e.kind, e.data)}"))
    return out


def _detail(kind: str, data: Mapping[str, Any]) -> str:
    if kind in ("offloaded", "verified") and data.get("stored_relpath"):
        return f"  {Path(str(data['stored_relpath'])).name}"
    if kind.startswith("clock") and "drift_before_ms" in data:
        return f"  drift {data['drift_before_ms']} ms, {data.get('action')}"
    if kind == "undocked":
        result = data.get("offload")
        if isinstance(result, Mapping):
            return f"  offload {result.get('outcome')}, {result.get('stored', 0)} stored"
    return ""


def run(fetch: Callable[[], Mapping[str, Any]], db: Path | None, *, out: TextIO = sys.stdout,
        interval_s: float = 1.0, plain: bool | None = None, plain_interval_s: float = 5.0,
        until_done: int | None = None, timeout_s: float | None = None,
        events: int = 8) -> int:
    """Redraw until interrupted; with `until_done`, until done (0) or `timeout_s` (1)."""
    if plain is None:
        plain = not out.isatty()
    started = time.monotonic()
    last_text, last_print = "", 0.0
    if not plain:
        out.write(HIDE_CURSOR)
    try:
        while True:
            try:
                snap = Snapshot(dict(fetch()), ledger_events(db, events))
            except Exception as exc:  # the agent may not be up yet, or restarting
                snap = Snapshot(None, [], str(exc).splitlines()[0])
            finished = until_done is not None and done(snap.status, until_done)
            columns = None if plain else shutil.get_terminal_size().columns
            text = render(snap, columns=columns)
            now = time.monotonic()
            if columns is not None:
                # Clipped to the terminal's width: a wrapped line would break the redraw.
                out.write(HOME_CLEAR + "\n".join(clip(line, columns)
                                                  for line in text.splitlines()) + "\n")
            elif finished or (now - last_print >= plain_interval_s
                              and _sans_clock(text) != _sans_clock(last_text)):
                out.write(f"---\n{text}\n")
                last_text, last_print = text, now
            out.flush()
            if finished:
                return 0
            if timeout_s is not None and now - started > timeout_s:
                out.write(f"dockctl watch: not done after {timeout_s:g} s\n")
                return 1
            time.sleep(interval_s)
    finally:
        if not plain:
            out.write(SHOW_CURSOR)
            out.flush()


def clip(line: str, columns: int) -> str:
    """`line` cut to `columns` terminal cells (CJK characters take two)."""
    if display_width(line) <= columns:
        return line
    out, used = [], 0
    for ch in line:
        w = display_width(ch)
        if used + w > columns:
            break
        out.append(ch)
        used += w
    return "".join(out)


def _sans_clock(text: str) -> str:
    first, _, rest = text.partition("\n")
    return first.split("   ")[0] + rest
