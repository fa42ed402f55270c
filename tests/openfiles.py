"""Whether a process holds a file open, read from /proc: a test waits on it to know a
job is inside the file it reads (never on time)."""

from __future__ import annotations

import os
from pathlib import Path


def holds_open(path: Path, pid: int | str = "self") -> bool:
    """Process `pid` (this one by default) has `path` open."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fds)
    except OSError:
        return False  # the process is gone
    for name in names:
        try:
            if os.readlink(fds / name) == str(path):
                return True
        except OSError:
            continue  # closed meanwhile
    return False
