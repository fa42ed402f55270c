"""The virtual recorder's own event log, persisted as JSON lines in its directory."""

from __future__ import annotations

import json
from pathlib import Path

from firmware_bridge.messages import DETAIL_MAX, DeviceLogEvent


class DeviceEventLog:
    """Entries in memory (``entries``, index order) and appended to ``path`` as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[DeviceLogEvent] = []

    def load(self) -> bool:
        """Read the saved log; False (and an empty log) if there is none or it is unreadable."""
        entries: list[DeviceLogEvent] = []
        try:
            for line in self.path.read_text().splitlines():
                d = json.loads(line)
                entries.append(DeviceLogEvent(d["index"], d["time_ms"], d["kind"], d["detail"]))
        except (OSError, ValueError, KeyError, TypeError):
            entries = []
        self.entries[:] = entries
        if not entries:
            self.path.unlink(missing_ok=True)
        return bool(entries)

    def append(self, items: list[tuple[int, str, int]]) -> None:
        """Append (kind, detail, device time ms) entries to the log and its file."""
        lines = []
        for kind, detail, when in items:
            short = detail.encode("utf-8")[: DETAIL_MAX - 12].decode("utf-8", "ignore")
            e = DeviceLogEvent(len(self.entries), max(0, when), kind, short)
            self.entries.append(e)
            lines.append(json.dumps({"index": e.index, "time_ms": e.time_ms,
                                     "kind": int(e.kind), "detail": e.detail}) + "\n")
        with self.path.open("a") as fh:
            fh.write("".join(lines))
