"""Named steps of the durability protocol, for power-cut testing; inert in production.

Power-cut tests (scripts/hil/power-cut, docs/power-cut.md) cut the dock's power at chosen
steps of an offload: mid-file after a periodic fdatasync, after the rename but before the
ledger commit, around the recorder's delete. Each such step calls `reached(name)`. Without
`DOCK_AGENT_CRASHPOINT_LOG` in the environment that is one dictionary lookup and nothing
else. With it, the step appends `<name> <n>` to that file (n counts arrivals at this step
in this process), and when `DOCK_AGENT_CRASHPOINT_HOLD` is `<name>:<n>` the n-th arrival
stops the calling thread for good, so the harness can cut the power at exactly that point.
"""

from __future__ import annotations

import os
import threading
import time

LOG_ENV = "DOCK_AGENT_CRASHPOINT_LOG"
HOLD_ENV = "DOCK_AGENT_CRASHPOINT_HOLD"

# The steps, in the order one file passes them (documented in docs/power-cut.md).
POINTS = ("offload_started", "copy_synced", "copy_complete", "installed", "committed",
          "verified", "wipe_intent", "wipe_sent", "wiped")

_counts: dict[str, int] = {}
_lock = threading.Lock()


def _hold_spec(value: str | None) -> tuple[str, int] | None:
    if not value or ":" not in value:
        return None
    name, _, nth = value.rpartition(":")
    return (name, int(nth)) if nth.isdigit() and name in POINTS else None


def reached(name: str) -> None:
    """Mark step `name`; hold here for good when the environment asks for it."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    with _lock:
        n = _counts[name] = _counts.get(name, 0) + 1
        hold = _hold_spec(os.environ.get(HOLD_ENV)) == (name, n)
        line = f"{'HOLD ' if hold else ''}{name} {n}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    while hold:  # the power cut ends this process; nothing after this step may run
        time.sleep(3600)
