"""The size and BLAKE3 of a stored file, streamed with large reads: what every check of
the store on disk (`dockctl verify --deep`, the fixity audit, `dock-verify STORE`)
compares with the recorded hash. A symbolic link is never followed. With the agent's stop
signal (agent.longjobs) the hash ends at the next read once a stop is asked for, so a
stop never waits for one whole multi-GB file."""

from __future__ import annotations

import os
from pathlib import Path

from blake3 import blake3

from agent.longjobs import StopSignal, check

READ_SIZE = 8 * 1024 * 1024


def hash_file(path: Path, read_size: int = READ_SIZE, *,
              stop: StopSignal | None = None) -> tuple[int, str]:
    """(size, BLAKE3 hex) of a file, streamed with large reads; JobStopped between two
    reads once `stop` is set (the caller then judges nothing about this file)."""
    h = blake3()
    buf = bytearray(read_size)
    view = memoryview(buf)
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            fd = -1
            while n := f.readinto(view):
                check(stop)
                h.update(view[:n])
                size += n
    finally:
        if fd >= 0:
            os.close(fd)
    return size, h.hexdigest()
