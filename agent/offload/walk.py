"""Listing and opening a recorder's footage without trusting it.

The recorder's filesystem is hostile input: only regular files below the configured
footage directories are taken. Walking uses bytes paths and `lstat` semantics (symlinks
are never followed); every refusal is reported with its reason so the caller can record
a custody fault. Opening re-walks the path one component at a time with `O_NOFOLLOW`
relative to the parent's descriptor, so a symlink swapped in after the listing is refused
too, and the final `fstat` must still show a regular file.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from agent.offload.errors import CopyStopped, SourceRefusedError

MAX_DEPTH = 16


@dataclass(frozen=True, slots=True)
class SourceFile:
    relpath: bytes  # relative to the storage root, e.g. b"DCIM/100MEDIA/FILE0001.MP4"
    size: int
    mtime_ns: int
    blocks: int = -1  # 512-byte blocks allocated (st_blocks); -1: not known

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


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An entry the dock could not list or look at (I/O error, permission, path limits)."""

    relpath: bytes
    reason: str


class FileList:
    """The regular files of a walk, packed: paths one after the other in one byte string,
    sizes, modification times and block counts in typed arrays (some 40 bytes plus the
    path per file, where a record per file costs some 200). A `SourceFile` is made when
    one is asked for. Values a 64-bit array cannot hold (a hostile filesystem's) are kept
    aside exactly as they were read."""

    def __init__(self) -> None:
        self._paths = bytearray()
        self._ends = array("Q")  # offset in `_paths` just after each path
        self._numbers = (array("q"), array("q"), array("q"))  # size, mtime_ns, blocks
        self._wide: dict[tuple[int, int], int] = {}  # (file, field) -> value out of range

    def append(self, f: SourceFile) -> None:
        i = len(self._ends)
        for field_no, value in enumerate((f.size, f.mtime_ns, f.blocks)):
            try:
                self._numbers[field_no].append(value)
            except OverflowError:
                self._numbers[field_no].append(0)
                self._wide[i, field_no] = value
        self._paths += f.relpath
        self._ends.append(len(self._paths))

    def __len__(self) -> int:
        return len(self._ends)

    def relpath(self, i: int) -> bytes:
        return bytes(self._paths[self._ends[i - 1] if i else 0:self._ends[i]])

    def _number(self, i: int, field_no: int) -> int:
        return self._wide.get((i, field_no), self._numbers[field_no][i])

    def __getitem__(self, i: int) -> SourceFile:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return SourceFile(self.relpath(i), self._number(i, 0), self._number(i, 1),
                          self._number(i, 2))

    def __iter__(self) -> Iterator[SourceFile]:
        return (self[i] for i in range(len(self)))

    def sorted(self) -> FileList:
        """The same files in path order (the order an offload takes them in)."""
        if all(self.relpath(i - 1) <= self.relpath(i) for i in range(1, len(self))):
            return self
        out = FileList()
        for i in sorted(range(len(self)), key=self.relpath):
            out.append(self[i])
        return out

    def index(self, relpath: bytes) -> int | None:
        """Where the file of that path is, in a list in path order (as `scan` gives it)."""
        at = bisect.bisect_left(range(len(self)), relpath, key=self.relpath)
        return at if at < len(self) and self.relpath(at) == relpath else None

    def find(self, relpath: bytes) -> SourceFile | None:
        """The file of that path, in a list in path order (as `scan` gives it)."""
        at = self.index(relpath)
        return None if at is None else self[at]


Problem = Refused | Unreadable
ProblemSink = Callable[[Problem], None]


def _ignore(_p: Problem) -> None:
    return None


@dataclass(slots=True)
class Scan:
    """A walk's regular files, and of what it refused or could not read only what
    concerns the names it was asked to watch (every problem went to the walk's sink as
    it was found: a hostile recorder's hundreds of thousands are not kept here)."""

    files: FileList  # in path order
    refused: list[Refused]  # a watched name, refused
    unreadable: list[Unreadable]  # a watched name, or a directory above one, unreadable
    watched: frozenset[bytes] = frozenset()  # the watched names and their directories

    def find(self, relpath: bytes) -> SourceFile | None:
        """The listed file of that path (None when it is not listed)."""
        return self.files.find(relpath)

    def hides(self, relpath: bytes) -> bool:
        """Whether `relpath` (a watched name) is, or lies below, an entry that could not
        be read or was refused (a directory swapped for a symlink, say): its absence from
        `files` then proves nothing."""
        found: list[Problem] = [*self.unreadable, *self.refused]
        return any(relpath == p.relpath or relpath.startswith(p.relpath + b"/")
                   for p in found)

    def problem(self, p: Problem, report: ProblemSink) -> None:
        """Report one problem; keep it when it concerns a watched name."""
        report(p)
        if p.relpath in self.watched:
            if isinstance(p, Refused):
                self.refused.append(p)
            else:
                self.unreadable.append(p)


def _watched(names: Iterable[bytes]) -> frozenset[bytes]:
    """The names and every directory above each (what an unreadable entry may cover)."""
    out: set[bytes] = set()
    for name in names:
        parts = name.split(b"/")
        out.update(b"/".join(parts[:n]) for n in range(1, len(parts) + 1))
    return frozenset(out)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _why(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__} (errno {exc.errno})"


def scan(root: bytes, footage_dirs: Sequence[str], report: ProblemSink = _ignore,
         watch: Iterable[bytes] = (), stop: threading.Event | None = None) -> Scan:
    """All regular files under the footage directories (sorted); what was refused and
    what could not be read goes to `report` as it is found (the `Scan` keeps only what
    concerns a name in `watch`). Raises OSError only when the storage root itself cannot
    be opened; every entry below it is handled on its own.

    Directories are walked by descriptor (`openat` one component at a time), so neither
    a symlink swapped in nor a path longer than PATH_MAX can make the walk fail. A set
    `stop` ends the walk at the next entry (`CopyStopped`).
    """
    out = Scan(FileList(), [], [], _watched(watch))
    rfd = os.open(root, _DIR_FLAGS)
    try:
        for top in footage_dirs:
            rel_top = os.fsencode(top).strip(b"/")
            if any(unsafe_name(part) for part in rel_top.split(b"/")):
                out.problem(Refused(rel_top, "configured footage directory is unsafe"),
                            report)
                continue
            _Walk(out, report, stop or threading.Event()).top(rfd, rel_top)
    finally:
        os.close(rfd)
    out.files = out.files.sorted()
    return out


_DIR = "directory"  # an entry that is a directory (any other string: why it is refused)
_Entry = SourceFile | OSError | str


def _entry(rel: bytes, name: bytes, entry: os.DirEntry[str]) -> _Entry:
    """One directory entry as the walk needs it (never follows a symlink)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as exc:
        return exc
    if stat.S_ISDIR(st.st_mode):
        return _DIR
    if stat.S_ISREG(st.st_mode):
        return SourceFile(rel + b"/" + name, st.st_size, st.st_mtime_ns, st.st_blocks)
    return _kind(st.st_mode)


class _Walk:
    """One footage directory's walk: files packed into the scan, problems reported."""

    def __init__(self, out: Scan, report: ProblemSink, stop: threading.Event) -> None:
        self.out, self.report, self.stop = out, report, stop

    def problem(self, p: Problem) -> None:
        self.out.problem(p, self.report)

    def top(self, rfd: int, rel_top: bytes) -> None:
        parts = rel_top.split(b"/")
        dfd = os.dup(rfd)
        try:
            for i, part in enumerate(parts):
                here = b"/".join(parts[: i + 1])
                try:
                    st = os.stat(part, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    return  # this recorder simply has no such directory
                except OSError as exc:
                    self.problem(Unreadable(here, f"cannot look at it: {_why(exc)}"))
                    return
                if not stat.S_ISDIR(st.st_mode):
                    self.problem(Refused(here, f"footage directory is a {_kind(st.st_mode)}"))
                    return
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    self.problem(Unreadable(here, f"cannot open directory: {_why(exc)}"))
                    return
                os.close(dfd)
                dfd = nfd
            self.directory(dfd, rel_top, 0)
        finally:
            os.close(dfd)

    def directory(self, dfd: int, rel: bytes, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.problem(Refused(rel, "directory nesting too deep"))
            return
        # Each entry is handled while the directory is read: a regular file with a safe
        # name is packed into `out.files` at once (sorted at the end), a refusal or an
        # error is reported at once, a sub-directory is walked at once (one descriptor
        # more per level, at most MAX_DEPTH), and no `stat_result` (some twenty objects)
        # outlives its entry. So a directory of many entries, files, sub-directories or
        # hostile ones, costs a few packed bytes per file and nothing per other entry.
        try:
            with os.scandir(dfd) as it:
                for entry in it:
                    name = os.fsencode(entry.name)
                    if self.entry(rel, name, _entry(rel, name, entry)):
                        self.subdirectory(dfd, name, rel + b"/" + name, depth)
        except OSError as exc:
            # what was listed before the error is still taken; the directory is named
            self.problem(Unreadable(rel, f"cannot list directory: {_why(exc)}"))

    def entry(self, rel: bytes, name: bytes, what: _Entry) -> bool:
        """Take one entry; True when it is a directory to walk."""
        if self.stop.is_set():
            raise CopyStopped("the walk of the recorder's storage was stopped")
        why = unsafe_name(name)
        if isinstance(what, SourceFile) and why is None:
            self.out.files.append(what)
            return False
        child = rel + b"/" + name
        if why is not None:
            self.problem(Refused(child, why))
        elif isinstance(what, OSError):
            self.problem(Unreadable(child, f"cannot look at it: {_why(what)}"))
        elif what is _DIR:
            return True
        elif isinstance(what, str):
            self.problem(Refused(child, what))
        return False

    def subdirectory(self, dfd: int, name: bytes, child: bytes, depth: int) -> None:
        try:
            cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        except OSError as exc:
            self.problem(Unreadable(child, f"cannot open directory: {_why(exc)}"))
            return
        try:
            self.directory(cfd, child, depth + 1)
        finally:
            os.close(cfd)


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
