"""Supervision reports (regulation 000 §17): per officer and per recorder over a period.

Everything comes from the custody record (ledger, evidence index, fault register, export
register), so the report cannot say more or less than the chain does: dockings, hours and
files recorded, late offloads and how late, faults and "could not be used" records (error
faults), views and exports with their approvers, holds, preserved items, purges and clock
corrections. Rendered as JSON, CSV or a printable HTML page (no external resources).
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from agent.lifecycle.errors import LifecycleError
from agent.store import evidence, faults, ledger

COUNTS = ("dockings", "files", "bytes", "hours_recorded", "late_offloads", "late_max_hours",
          "faults", "unusable", "views", "exports", "holds", "preserved", "purges",
          "clock_corrections")


class PeriodError(LifecycleError):
    """A report period that cannot be understood."""


@dataclass(frozen=True)
class Period:
    label: str
    start: dt.datetime
    end: dt.datetime  # exclusive

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp() * 1_000_000)

    @property
    def end_us(self) -> int:
        return int(self.end.timestamp() * 1_000_000)


def _bounds(text: str, tz: dt.tzinfo) -> tuple[dt.datetime, dt.datetime] | None:
    def day(y: int, m: int, d: int = 1) -> dt.datetime:
        return dt.datetime(y, m, d, tzinfo=tz)

    if m := re.fullmatch(r"(\d{4})-Q([1-4])", text):
        y, q = int(m[1]), int(m[2])
        return day(y, 3 * q - 2), (day(y + 1, 1) if q == 4 else day(y, 3 * q + 1))
    if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
        y, mo = int(m[1]), int(m[2])
        return day(y, mo), (day(y + 1, 1) if mo == 12 else day(y, mo + 1))
    if m := re.fullmatch(r"(\d{4})", text):
        return day(int(m[1]), 1), day(int(m[1]) + 1, 1)
    if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text):
        a, b = dt.date.fromisoformat(m[1]), dt.date.fromisoformat(m[2])
        return day(a.year, a.month, a.day), day(b.year, b.month, b.day) + dt.timedelta(days=1)
    return None


def parse_period(text: str, tz: dt.tzinfo) -> Period:
    """`2026-Q3`, `2026-07`, `2026`, or `2026-07-01..2026-09-30` (inclusive), unit-local."""
    try:
        bounds = _bounds(text, tz)
    except ValueError:
        bounds = None
    if bounds is None:
        raise PeriodError(f"period {text!r}: use 2026-Q3, 2026-07, 2026 or"
                          " 2026-07-01..2026-09-30")
    start, end = bounds
    if end <= start:
        raise PeriodError(f"period {text!r} ends before it starts")
    return Period(text, start, end)


def _blank(key: str, name: str) -> dict[str, Any]:
    return {"key": key, "name": name, **{c: 0 for c in COUNTS}, "access": []}


class _Book:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def row(self, key: str | None, name: str = "") -> dict[str, Any]:
        k = key or "(none)"
        r = self.rows.setdefault(k, _blank(k, name))
        if name and not r["name"]:
            r["name"] = name
        return r

    def sorted(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows)]


class _Tally:
    """Counts per officer and per recorder; dock-level records (neither) belong to no row."""

    def __init__(self, officer: str | None, recorder: str | None) -> None:
        self.officers, self.recorders = _Book(), _Book()
        self.officer, self.recorder = officer, recorder
        self.session_officer: dict[str, str] = {}

    def rows(self, rec: str | None, off: str | None, name: str = "") -> list[dict[str, Any]]:
        if (self.officer is not None and off != self.officer) or \
                (self.recorder is not None and rec != self.recorder):
            return []
        out = [self.officers.row(off, name)] if off else []
        return [*out, self.recorders.row(rec)] if rec else out

    def file(self, f: evidence.StoredFile) -> None:
        hours = (0.0 if f.rec_start_us is None or f.rec_end_us is None
                 else max(0, f.rec_end_us - f.rec_start_us) / 3.6e9)
        for r in self.rows(f.recorder_serial, f.officer_no, f.officer_name):
            r["files"] += 1
            r["bytes"] += f.size
            r["hours_recorded"] = round(r["hours_recorded"] + hours, 3)
            if f.late:
                r["late_offloads"] += 1
                r["late_max_hours"] = max(r["late_max_hours"], round(f.late_by_s / 3600, 2))

    def entry(self, e: ledger.LedgerEntry) -> None:
        if e.kind == "docked":
            # A docking is recorded before the recorder is identified: its officer is the
            # one any later entry of the same session names.
            officer = e.officer or self.session_officer.get(e.session_id or "")
            self._count(self.rows(e.recorder, officer), "dockings")
        elif e.kind == "clock_set" and e.data.get("set_ok"):
            self._count(self.rows(e.recorder, e.officer), "clock_corrections")
        elif e.kind in _COUNTED:
            self._count(self.rows(e.recorder, e.officer), _COUNTED[e.kind])
            if e.kind == "accessed":
                for r in self.rows(e.recorder, e.officer):
                    r["access"].append(_access(e, "view", [e.data.get("file_id")]))
        elif e.kind == "export_started":
            self._export(e)

    @staticmethod
    def _count(rows: list[dict[str, Any]], column: str) -> None:
        for r in rows:
            r[column] += 1

    def _export(self, e: ledger.LedgerEntry) -> None:
        kind = str(e.data.get("kind", "export"))
        per: dict[tuple[str | None, str | None], list[Any]] = {}
        for f in e.data.get("files", []):
            per.setdefault((f.get("recorder"), f.get("officer_no")), []).append(
                f.get("file_id"))
        for (rec, off), ids in per.items():
            for r in self.rows(rec, off):
                if kind == "preservation":
                    r["preserved"] += len(ids)
                else:
                    r["exports"] += 1
                r["access"].append(_access(e, kind, ids))

    def fault(self, fault: faults.Fault) -> None:
        for r in self.rows(fault.recorder, fault.officer):
            r["faults"] += 1
            if fault.severity == "error":
                r["unusable"] += 1

    def totals(self) -> dict[str, Any]:
        off_rows, rec_rows = self.officers.sorted(), self.recorders.sorted()
        totals = {c: (round(sum(r[c] for r in off_rows), 3) if c != "late_max_hours"
                      else max([r[c] for r in off_rows], default=0)) for c in COUNTS}
        for c in ("dockings", "faults", "unusable", "clock_corrections"):
            totals[c] = sum(r[c] for r in rec_rows)  # also those with no officer assigned
        return totals


# Ledger kinds counted once per entry, and the column each one counts in.
_COUNTED = {"hold_set": "holds", "purged": "purges", "accessed": "views"}


def build(conn: sqlite3.Connection, period: Period, *, dock_id: str, timezone: str,
          officer: str | None = None, recorder: str | None = None) -> dict[str, Any]:
    tally = _Tally(officer, recorder)
    lo, hi = period.start_us, period.end_us
    tally.session_officer = {r[0]: r[1] for r in conn.execute(
        "SELECT session_id, officer FROM ledger WHERE session_id IS NOT NULL AND officer"
        " IS NOT NULL AND time_us >= ? AND time_us < ? ORDER BY seq", (lo, hi))}
    for f in evidence.query(conn):
        when = f.rec_start_us if f.rec_start_us is not None else f.offload_end_us
        if lo <= when < hi:
            tally.file(f)
    for e in ledger.entries(conn, since_us=lo, until_us=hi):
        tally.entry(e)
    for fault in faults.list_faults(conn, since_us=lo, until_us=hi):
        tally.fault(fault)
    return {
        "type": "dock-agent/supervision-report", "v": 1, "dock_id": dock_id,
        "period": {"label": period.label, "from": period.start.isoformat(),
                   "to": period.end.isoformat(), "timezone": timezone},
        "filters": {"officer": officer, "recorder": recorder},
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "officers": tally.officers.sorted(), "recorders": tally.recorders.sorted(),
        "totals": tally.totals(),
    }


def _access(e: ledger.LedgerEntry, kind: str, ids: list[Any]) -> dict[str, Any]:
    return {"kind": kind, "time": ledger.iso_utc(e.time_us), "seq": e.seq,
            "requester": e.data.get("requester"), "approver": e.data.get("approver"),
            "purpose": e.data.get("purpose"), "file_ids": ids}


def to_csv(report: Mapping[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["period", "scope", "key", "name", *COUNTS, "approvers"])
    for scope in ("officers", "recorders"):
        for r in report[scope]:
            approvers = sorted({str(a["approver"]) for a in r["access"]})
            w.writerow([report["period"]["label"], scope[:-1], _cell(r["key"]),
                        _cell(r["name"]), *(r[c] for c in COUNTS), ";".join(approvers)])
    return out.getvalue()


def _cell(value: object) -> str:
    """No spreadsheet formula injection from recorder-supplied names."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


_LABELS = {"dockings": "Dockings", "files": "Files", "bytes": "Bytes",
           "hours_recorded": "Hours", "late_offloads": "Late", "late_max_hours": "Latest (h)",
           "faults": "Faults", "unusable": "Could not be used", "views": "Views",
           "exports": "Exports", "holds": "Holds", "preserved": "Preserved",
           "purges": "Purges", "clock_corrections": "Clock set"}


def _table(title: str, rows: list[dict[str, Any]], key_label: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(_LABELS[c])}</th>" for c in COUNTS)
    body = "".join(
        f"<tr><td>{e(str(r['key']))}</td><td>{e(str(r['name']))}</td>"
        + "".join(f"<td class=n>{e(str(r[c]))}</td>" for c in COUNTS) + "</tr>"
        for r in rows) or f"<tr><td colspan={len(COUNTS) + 2}>none</td></tr>"
    return (f"<h2>{e(title)}</h2><table><thead><tr><th>{e(key_label)}</th><th>Name</th>"
            f"{head}</tr></thead><tbody>{body}</tbody></table>")


def _chart(rows: list[dict[str, Any]]) -> str:
    """Hours recorded per officer as an inline SVG bar chart."""
    if not rows:
        return ""
    top = max((float(r["hours_recorded"]) for r in rows), default=0.0) or 1.0
    bar_h, width = 22, 420
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 260}"'
             f' height="{bar_h * len(rows) + 10}" role="img"'
             ' aria-label="Hours recorded per officer">']
    for i, r in enumerate(rows):
        w = int(width * float(r["hours_recorded"]) / top)
        y = 5 + i * bar_h
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">'
                     f'{html.escape(str(r["key"]))}</text>'
                     f'<rect x="120" y="{y}" width="{max(w, 1)}" height="{bar_h - 6}"'
                     f' fill="#3a6ea5"/><text x="{126 + w}" y="{y + 15}" font-size="12">'
                     f'{html.escape(str(r["hours_recorded"]))} h, {r["files"]} files</text>')
    parts.append("</svg>")
    return "<h2>Hours recorded per officer</h2>" + "".join(parts)


def to_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    p = report["period"]
    access = [(scope_row["key"], a) for scope_row in report["officers"]
              for a in scope_row["access"]]
    access_rows = "".join(
        f"<tr><td>{e(a['time'])}</td><td>{e(a['kind'])}</td><td>{e(str(k))}</td>"
        f"<td>{e(str(a['requester']))}</td><td>{e(str(a['approver']))}</td>"
        f"<td>{e(str(a['purpose']))}</td><td>{e(', '.join(map(str, a['file_ids'])))}</td></tr>"
        for k, a in sorted(access, key=lambda x: x[1]["seq"])
    ) or "<tr><td colspan=7>no views or exports</td></tr>"
    t = report["totals"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Supervision report {e(p['label'])} - {e(report['dock_id'])}</title>
<style>
body {{ font-family: sans-serif; font-size: 11pt; margin: 1.5cm; color: #000; }}
h1 {{ font-size: 16pt; margin: 0 0 .3em 0; }} h2 {{ font-size: 13pt; margin-top: 1.2em; }}
table {{ border-collapse: collapse; width: 100%; font-size: 9pt; }}
th, td {{ border: 1px solid #888; padding: 2px 4px; text-align: left; }}
td.n {{ text-align: right; }} th {{ background: #eee; }}
@page {{ size: A4 landscape; margin: 1cm; }}
@media print {{ body {{ margin: 0; }} tr {{ page-break-inside: avoid; }} }}
</style></head><body>
<h1>Supervision report: {e(p['label'])}</h1>
<p>Dock {e(report['dock_id'])} &middot; {e(p['from'])} to {e(p['to'])} ({e(p['timezone'])})
&middot; generated {e(report['generated'])}</p>
<p>Totals: {t['files']} files, {t['hours_recorded']} hours recorded, {t['dockings']}
dockings, {t['late_offloads']} late offloads, {t['faults']} faults ({t['unusable']} could
not be used), {t['views']} views, {t['exports']} exports, {t['preserved']} preserved,
{t['holds']} holds, {t['purges']} purges, {t['clock_corrections']} clock corrections.</p>
{_chart(report['officers'])}
{_table('Per officer', report['officers'], 'Officer')}
{_table('Per recorder', report['recorders'], 'Recorder')}
<h2>Views and exports (access register)</h2>
<table><thead><tr><th>Time (UTC)</th><th>Kind</th><th>Officer</th><th>Requester</th>
<th>Approver</th><th>Purpose</th><th>Files</th></tr></thead><tbody>{access_rows}</tbody>
</table>
<p>Signed: ______________________ (supervisor) &nbsp; Date: ____________</p>
</body></html>
"""


def zone(name: str) -> dt.tzinfo:
    return ZoneInfo(name)
