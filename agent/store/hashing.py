"""The size and BLAKE3 of a stored file, streamed with large reads: what every check of
the store on disk (`dockctl verify --deep`, the fixity audit, `dock-verify STORE`)
compares with the recorded hash. A symbolic link is never followed. `between_reads` runs
before each read is hashed: the agent's long jobs end there once a stop is asked for (it
raises), so a stop never waits for one whole multi-GB file. (No agent imports here: the
stand-alone verifier uses this module.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from blake3 import blake3

READ_SIZE = 8 * 1024 * 1024


def hash_file(path: Path, read_size: int = READ_SIZE, *,
              between_reads: Callable[[], None] | None = None) -> tuple[int, str]:
    """(size, BLAKE3 hex) of a file, streamed with large reads."""
    h = blake3()
    buf = bytearray(read_size)
    view = memoryview(buf)
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            fd = -1
            while n := f.readinto(view):
                if between_reads is not None:
                    between_reads()
                h.update(view[:n])
                size += n
    finally:
        if fd >= 0:
            os.close(fd)
    return size, h.hexdigest()
