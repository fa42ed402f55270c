"""Making a directory entry durable: the one fsync of a directory every writer shares."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path, *, missing_ok: bool = False) -> None:
    """fsync the directory `path`, so a file created, renamed or removed in it stays so
    after a power cut. `missing_ok`: a directory that is gone already has nothing to keep."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
