"""When a recording was made: the recorder's claims, checked against what the dock knows.

Pure rules (see docs/offload-times.md). A claimed time is plausible when it lies between
`EARLIEST_US` (2000-01-01T00:00:00Z, before any body-worn recorder of this kind) and the
dock's own clock plus `FUTURE_SLACK_US` (a day: time-zone and clock-drift mistakes of an
honest recorder). In that order the first plausible source is used:
  1. the recorder's listing (start and end; start must not be after end);
  2. the file's modification time on the recorder's storage (end only);
  3. the dock's clock when the offload started ("dock": end only, start unknown).
Every claim that was not plausible is kept as a raw fact (`Rejected`, the value as decimal
text so that no range limit of JSON, SQLite or datetime applies) for the custody record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TimeSource = Literal["recorder", "mtime", "dock"]
EARLIEST_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
FUTURE_SLACK_US = 86_400_000_000  # one day


@dataclass(frozen=True, slots=True)
class Rejected:
    """A recorder-supplied time that was not used, as it was received."""

    field: str  # "start_ms", "end_ms" (listing) or "mtime_ns" (file system)
    raw: str  # the integer as decimal text
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "raw": self.raw, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RecordingTimes:
    start_us: int | None
    end_us: int
    source: TimeSource
    rejected: tuple[Rejected, ...] = ()


def _problem(us: int, now_us: int) -> str | None:
    if us < EARLIEST_US:
        return "before 2000-01-01"
    if us > now_us + FUTURE_SLACK_US:
        return "more than a day after the dock's clock"
    return None


def decide(listed: tuple[int, int] | None, mtime_ns: int, now_us: int) -> RecordingTimes:
    """The times to record for one file; see the module docstring for the rule."""
    rejected: list[Rejected] = []
    if listed is not None:
        start_ms, end_ms = int(listed[0]), int(listed[1])
        bad = [Rejected(name, str(ms), why) for name, ms in (("start_ms", start_ms),
                                                           ("end_ms", end_ms))
               if (why := _problem(ms * 1000, now_us)) is not None]
        if not bad and start_ms > end_ms:
            bad = [Rejected("start_ms", str(start_ms), f"after the end ({end_ms})")]
        if not bad:
            return RecordingTimes(start_ms * 1000, end_ms * 1000, "recorder")
        rejected += bad
    mtime_us = int(mtime_ns) // 1000
    why = _problem(mtime_us, now_us)
    if why is None:
        return RecordingTimes(None, mtime_us, "mtime", tuple(rejected))
    rejected.append(Rejected("mtime_ns", str(int(mtime_ns)), why))
    return RecordingTimes(None, now_us, "dock", tuple(rejected))
