"""Listing and opening a recorder's footage without trusting it.

The recorder's filesystem is hostile input: only regular files below the configured
footage directories are taken. Walking uses bytes paths and `lstat` semantics (symlinks
are never followed); every refusal is reported with its reason so the caller can record
a custody fault. Opening re-walks the path one component at a time with `O_NOFOLLOW`
relative to the parent's descriptor, so a symlink swapped in after the listing is refused
too, and the final `fstat` must still show a regular file.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from agent.offload.errors import SourceRefusedError

MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class SourceFile:
    relpath: bytes  # relative to the storage root, e.g. b"DCIM/100MEDIA/FILE0001.MP4"
    size: int
    mtime_ns: int

    @property
    def basename(self) -> bytes:
        return self.relpath.rpartition(b"/")[2]


@dataclass(frozen=True, slots=True)
class Refused:
    relpath: bytes
    reason: str


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device node"
    if stat.S_ISSOCK(mode):
        return "socket"
    return f"not a regular file (mode {mode:o})"


def unsafe_name(name: bytes) -> str | None:
    """Why a single path component may not be used, or None when it is fine."""
    if name in (b"", b".", b".."):
        return "name would escape the footage directory"
    if b"/" in name or b"\0" in name:
        return "name contains a path separator or NUL"
    return None


def scan(root: bytes, footage_dirs: Sequence[str]) -> tuple[list[SourceFile], list[Refused]]:
    """All regular files under the footage directories (sorted), and what was refused."""
    files: list[SourceFile] = []
    refused: list[Refused] = []
    for top in footage_dirs:
        rel_top = os.fsencode(top).strip(b"/")
        if any(unsafe_name(part) for part in rel_top.split(b"/")):
            refused.append(Refused(rel_top, "configured footage directory is unsafe"))
            continue
        try:
            st = os.lstat(os.path.join(root, rel_top))  # noqa: PTH118 - bytes paths
        except FileNotFoundError:
            continue  # this recorder simply has no such directory
        if not stat.S_ISDIR(st.st_mode):
            refused.append(Refused(rel_top, f"footage directory is a {_kind(st.st_mode)}"))
            continue
        _scan_dir(root, rel_top, 0, files, refused)
    files.sort(key=lambda f: f.relpath)
    return files, refused


def _scan_dir(
    root: bytes, rel: bytes, depth: int, files: list[SourceFile], refused: list[Refused]
) -> None:
    if depth > MAX_DEPTH:
        refused.append(Refused(rel, "directory nesting too deep"))
        return
    with os.scandir(os.path.join(root, rel)) as it:  # noqa: PTH118 - bytes paths
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        child = rel + b"/" + name
        why = unsafe_name(name)
        if why is not None:
            refused.append(Refused(child, why))
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            _scan_dir(root, child, depth + 1, files, refused)
        elif stat.S_ISREG(st.st_mode):
            files.append(SourceFile(child, st.st_size, st.st_mtime_ns))
        else:
            refused.append(Refused(child, _kind(st.st_mode)))


def open_source(root: bytes, relpath: bytes) -> int:
    """Open a listed file read-only without following any symlink; returns the fd."""
    parts = relpath.split(b"/")
    for part in parts:
        why = unsafe_name(part)
        if why is not None:
            raise SourceRefusedError(f"{relpath!r}: {why}")
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    file_flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    dfd = os.open(root, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, dir_flags, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise SourceRefusedError(f"{relpath!r}: a parent is not a directory") from exc
                raise
            os.close(dfd)
            dfd = nfd
        try:
            fd = os.open(parts[-1], file_flags, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SourceRefusedError(f"{relpath!r}: symlink") from exc
            raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise SourceRefusedError(f"{relpath!r}: {_kind(st.st_mode)}")
    return fd
