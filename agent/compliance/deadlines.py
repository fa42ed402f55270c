"""Storage deadlines (regulation 000 §13: 24 hours; 004 §13: 2 working days).

Pure code. A policy answers one question: given when footage was recorded (or when a
recorder left the dock), by when must it be stored? Working days are counted in the
unit's time zone: the day of the activity itself does not count, the deadline is the
end (24:00 local) of the Nth working day after it. Weekends and listed holidays are not
working days; listed make-up workdays (weekend days declared working) are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.compliance.day_lists import DayList, parse_day_list_text, read_day_list


class DeadlineConfigError(ValueError):
    """A holiday or workday file is malformed; names the file and line."""


def _checked(day_list: DayList, source: str) -> frozenset[date]:
    if day_list.problems:
        raise DeadlineConfigError("\n".join(
            f"{source}:{p.line}: {p.message}" if p.line else f"{source}: {p.message}"
            for p in day_list.problems))
    return day_list.days


def parse_day_list(text: str, source: str) -> frozenset[date]:
    """The days of a day list's text (see `agent.compliance.day_lists`); every bad line
    is named as `source:line` in one `DeadlineConfigError`."""
    return _checked(parse_day_list_text(text), source)


def load_day_list(path: Path | None) -> frozenset[date]:
    """The days of a day list file, or none without a file; `DeadlineConfigError` names
    the file (and line) of every problem."""
    if path is None:
        return frozenset()
    return _checked(read_day_list(path), str(path))


@dataclass(frozen=True)
class HoursDeadline:
    """Store within a fixed number of hours."""

    hours: float

    def due(self, event_utc: datetime) -> datetime:
        return _utc(event_utc) + timedelta(hours=self.hours)


@dataclass(frozen=True)
class WorkingDaysDeadline:
    """Store by the end of the Nth working day after the day of the event."""

    days: int
    tz: ZoneInfo
    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def due(self, event_utc: datetime) -> datetime:
        day = _utc(event_utc).astimezone(self.tz).date()
        counted = 0
        # Bounded walk: even a year of holidays cannot make this loop forever.
        for _ in range(self.days * 7 + 400):
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
                if counted == self.days:
                    end_local = datetime.combine(day + timedelta(days=1), time(0), self.tz)
                    return end_local.astimezone(UTC)
        raise DeadlineConfigError("no working day found within a year: check the holiday list")


DeadlinePolicy = HoursDeadline | WorkingDaysDeadline


@dataclass(frozen=True, slots=True)
class Lateness:
    deadline: datetime
    late: bool
    late_by_s: float  # 0 when on time


def lateness(policy: DeadlinePolicy, event_utc: datetime, stored_utc: datetime) -> Lateness:
    """Was footage recorded (ended) at `event_utc` and stored at `stored_utc` late?"""
    deadline = policy.due(event_utc)
    over = (_utc(stored_utc) - deadline).total_seconds()
    return Lateness(deadline, over > 0, max(0.0, over))


def make_policy(
    *,
    hours: float | None,
    working_days: int | None,
    tz: ZoneInfo,
    holidays: Iterable[date] = (),
    workdays: Iterable[date] = (),
) -> DeadlinePolicy:
    if (hours is None) == (working_days is None):
        raise DeadlineConfigError("set exactly one of deadline.hours and deadline.working_days")
    if hours is not None:
        return HoursDeadline(hours)
    assert working_days is not None
    return WorkingDaysDeadline(working_days, tz, frozenset(holidays), frozenset(workdays))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: all stored times are UTC and must say so")
    return moment.astimezone(UTC)
