"""Evidence-store filesystem steps: directories, free space, installing, orphan partials.

All functions block; the offloader calls them from worker threads. Directories are made
0750 and each new directory entry is made durable by fsyncing its parent, so a committed
custody record never points into a directory the disk forgot.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.offload.errors import StoreError
from agent.store.durable import fsync_dir
from agent.store.layout import is_partial_name

DIR_MODE = 0o750


def ensure_dir(store_root: Path, rel_dir: str) -> Path:
    """Create `store_root/rel_dir` (0750 at every new level) durably; returns its path."""
    cur = store_root
    for part in Path(rel_dir).parts:
        nxt = cur / part
        try:
            nxt.mkdir(DIR_MODE)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(nxt).st_mode):
                raise StoreError(f"{nxt} exists and is not a directory") from None
        else:
            nxt.chmod(DIR_MODE)  # the umask may have narrowed or widened it
            fsync_dir(cur)
        cur = nxt
    return cur


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def install(partial: Path, final: Path) -> None:
    """Give a complete, fsynced partial its final name, durably; never overwrite."""
    if os.path.lexists(final):
        raise StoreError(f"refusing to overwrite existing stored file {final}")
    partial.rename(final)
    fsync_dir(final.parent)


def discard(path: Path) -> None:
    """Remove one of our own partial files (never a stored file)."""
    if not is_partial_name(path.name):
        raise StoreError(f"refusing to delete {path}: not a partial file")
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def orphan_partials(store_root: Path, claimed: set[str]) -> list[Path]:
    """Partial files under the store that no journal row claims (store-relative check)."""
    out: list[Path] = []
    if not store_root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(store_root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            if is_partial_name(name):
                path = Path(dirpath) / name
                if path.relative_to(store_root).as_posix() not in claimed:
                    out.append(path)
    return sorted(out)
