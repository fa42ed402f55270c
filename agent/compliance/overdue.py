"""Recorders that left the dock and have not come back to offload within the deadline.

Pure: given when each known recorder last left (and whether it is docked now), the deadline
policy and the time, answer which are overdue and since when. The agent raises an OVERDUE
fault for each (once) and clears it when the recorder docks again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.compliance.deadlines import DeadlinePolicy


@dataclass(frozen=True, slots=True)
class Whereabouts:
    serial: str
    officer_no: str | None
    last_undocked: datetime | None  # None: never left (or docked now)
    docked_now: bool


@dataclass(frozen=True, slots=True)
class Overdue:
    serial: str
    officer_no: str | None
    left_at: datetime
    due: datetime


def overdue_recorders(
    known: Iterable[Whereabouts], policy: DeadlinePolicy, now: datetime
) -> list[Overdue]:
    out: list[Overdue] = []
    for w in known:
        if w.docked_now or w.last_undocked is None:
            continue
        due = policy.due(w.last_undocked)
        if now > due:
            out.append(Overdue(w.serial, w.officer_no, w.last_undocked, due))
    return sorted(out, key=lambda o: o.due)
