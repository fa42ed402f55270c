# ruff: noqa: PTH104, PTH105, PTH108, PTH114, PTH118, PTH119, PTH211
# (bytes paths on purpose: names on a recorder need not be valid UTF-8)
"""A virtual recorder's storage on disk: materialised footage, hostile entries, listing, delete.

Layout under the recorder directory `<workdir>/<serial>/`:
  backing/       the recorder's filesystem while it is locked (not in mass-storage mode)
  media/         the same tree while it is exposed (plain mode renames backing/ to media/;
                 FUSE mode mounts a fault-injecting view of backing/ on media/)
  manifest.json  written once the footage is complete; a replug with the same spec finds
                 it and presents the same files without regenerating them.
All methods block (disk I/O, hashing); the recorder calls them from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

from firmware_bridge.messages import NAME_MAX
from hw_sim.blockvolume import IMAGE_NAME, BlockVolume, clear_leftovers
from hw_sim.errors import SimError
from hw_sim.footage import FOOTAGE_DIR, FootageFile, footage_files, iter_content
from hw_sim.fusemount import unmount_sync
from hw_sim.spec import RecorderSpec

MANIFEST_VERSION = 1


class StorageRefusal(SimError):
    """A storage operation the recorder refuses; `reason` is not_found, mismatch or bad_name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HostileEntry:
    name: bytes  # relative to the storage root
    kind: str  # dotdot, absolute, symlink_out, fifo, device, long_name, bad_utf8


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of the recorder's recording list."""

    name: bytes
    size: int
    start_ms: int
    end_ms: int


class ReadPacer:
    """A recorder's read rate limit (its USB 2.0 link: 30-42 MB/s): every read of the
    storage takes its turn on the link so the bytes leave no faster than `rate` bytes/s in
    total, however many readers share the device. Thread-safe; used by the FUSE view.

    A read books its slot on the link when it arrives (`book`), then fetches its bytes and
    waits for the slot's end (`wait`). The device's own read latency thus overlaps the
    transfer, as on a real recorder whose controller reads flash while the link sends;
    charging the link only after the read made every request cost latency + transfer, and
    25 recorders on one busy disk ran at half their link rate."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise SimError("a read rate must be positive")
        self.rate = rate
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._free_at = 0.0  # when the link has sent everything booked on it so far

    def book(self, nbytes: int) -> float:
        """Book `nbytes` on the link from now (or from when it is free); the slot's end."""
        with self._lock:
            self._free_at = max(self._free_at, self._clock()) + nbytes / self.rate
            return self._free_at

    def wait(self, until: float) -> None:
        """Block until a booked slot has ended."""
        wait = until - self._clock()
        if wait > 0:
            self._sleep(wait)

    def pace(self, nbytes: int) -> None:
        """Block until `nbytes` more bytes may have crossed the link."""
        self.wait(self.book(nbytes))


def hostile_entries(*, as_root: bool | None = None) -> list[HostileEntry]:
    """The hostile entries created on storage when `Faults.hostile_names` is set."""
    root = os.geteuid() == 0 if as_root is None else as_root
    d = FOOTAGE_DIR + b"/"
    out = [
        HostileEntry(d + b"..MP4", "dotdot"),
        HostileEntry(d + b"...", "dotdot"),
        HostileEntry(d + b"..\\..\\escape.MP4", "dotdot"),
        HostileEntry(d + b"\\etc\\passwd.MP4", "absolute"),
        HostileEntry(d + b"C:\\evil.MP4", "absolute"),
        HostileEntry(d + b"link_out.MP4", "symlink_out"),
        HostileEntry(d + b"rel_out.MP4", "symlink_out"),
        HostileEntry(b"DCIM/escape_dir", "symlink_out"),
        HostileEntry(d + b"fifo.MP4", "fifo"),
        HostileEntry(d + b"L" * (255 - 4) + b".MP4", "long_name"),
        HostileEntry(d + b"bad_\xff\xfe_name.MP4", "bad_utf8"),
    ]
    if root:
        out.append(HostileEntry(d + b"zero.MP4", "device"))
    return out


# A regular file whose name would forge a line (newline, carriage return), drive a terminal
# (ESC, C1 CSI) or reorder text (U+2028, a bidi override) wherever it is shown raw.
CONTROL_NAME = (FOOTAGE_DIR + b"/ctl\nFRG forged line\r\x1b[2J\xc2\x9b31m\xe2\x80\xa8"
                b"\xe2\x80\xaeFRG.MP4")


def _fingerprint(spec: RecorderSpec, *, image: bool = False) -> str:
    f = spec.faults
    desc = repr((spec.serial, spec.footage, f.hostile_names)
                + ((True,) if f.control_names else ()) + (("image",) if image else ())).encode()
    return hashlib.sha256(desc).hexdigest()


class RecorderStorage:
    """The on-disk storage of one recorder (see module docstring)."""

    def __init__(self, spec: RecorderSpec, recorder_dir: Path) -> None:
        self.spec = spec
        self.dir = recorder_dir
        self.backing = recorder_dir / "backing"
        self.media = recorder_dir / "media"
        self.manifest = recorder_dir / "manifest.json"
        self._files = {f.name: f for f in footage_files(spec)}
        # name -> (mtime_ns, BLAKE3) of footage as written; a guarded delete of an
        # unchanged file uses it instead of re-reading gigabytes on the event loop.
        self._digests: dict[bytes, tuple[int, bytes]] = {}
        # The files live in a throttled block device's image instead of a plain directory
        # (`use_volume`, before `materialise`); None: backing/ is a plain directory.
        self.volume: BlockVolume | None = None

    @property
    def volume_image(self) -> Path:
        return self.dir / IMAGE_NAME

    def use_volume(self, volume: BlockVolume | None) -> None:
        """Keep the files in `volume` (a throttled loop device) from the next plug on."""
        self.volume = volume

    def release(self) -> None:
        """Unplug: a block volume is unmounted and detached (a plain directory stays)."""
        if self.volume is not None:
            self.volume.detach()

    # --- where the tree is right now -------------------------------------------------
    @property
    def root(self) -> Path:
        """The directory holding the tree (backing/ unless plain mode exposed it)."""
        if not self.backing.exists() and self.media.is_dir() and not os.path.ismount(self.media):
            return self.media
        return self.backing

    def expose_plain(self) -> Path:
        """Plain mode: make the files visible at media/ (an atomic rename)."""
        if self.root != self.media:
            os.rename(self.backing, self.media)
        return self.media

    def hide_plain(self) -> None:
        if self.root == self.media:
            os.rename(self.media, self.backing)

    # --- creation ----------------------------------------------------------------------
    def materialise(self) -> None:
        """Create the files unless a previous plug already did (same spec)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        unmount_sync(self.media)  # stale FUSE view of a killed simulator
        clear_leftovers(self.dir)  # stale loop device and mounts of a killed simulator
        if self.volume is not None:
            self._materialise_volume(self.volume)
            return
        self.volume_image.unlink(missing_ok=True)  # footage of an earlier throttled plug
        if self.media.exists() and not self.backing.exists():
            os.rename(self.media, self.backing)  # left exposed by a killed simulator
        if self._load_manifest(_fingerprint(self.spec)):
            return
        if self.backing.exists():
            shutil.rmtree(self.backing)
        self._create_footage()
        self._save_manifest(_fingerprint(self.spec))

    def _materialise_volume(self, volume: BlockVolume) -> None:
        fp = _fingerprint(self.spec, image=True)
        known = self._load_manifest(fp)
        for plain in (self.backing, self.media):  # footage of an earlier plain plug
            if plain.exists() and not os.path.ismount(plain):
                shutil.rmtree(plain)
        sizes = self.spec.footage.file_sizes
        volume.attach(sum(sizes), len(sizes) + 64, fresh=not known)
        if known:
            return
        self._create_footage()
        volume.settle()
        self._save_manifest(fp)

    def _load_manifest(self, fingerprint: str) -> bool:
        """Take the digests of a previous plug with the same spec; False if there is none
        (and forget what this recorder directory knew of another)."""
        try:
            manifest = json.loads(self.manifest.read_text())
            if manifest["fingerprint"] == fingerprint:
                self._digests = {
                    bytes.fromhex(k): (v[0], bytes.fromhex(v[1]))
                    for k, v in manifest["digests"].items()
                }
                return True
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
        self.manifest.unlink(missing_ok=True)
        for stale in ("eventlog.jsonl", "state.json"):  # history of a different recorder
            (self.dir / stale).unlink(missing_ok=True)
        return False

    def _create_footage(self) -> None:
        (self.backing / os.fsdecode(FOOTAGE_DIR)).mkdir(parents=True)
        self._digests = {}
        for f in self._files.values():
            self._write(f)
        if self.spec.faults.hostile_names:
            self._make_hostile()
        if self.spec.faults.control_names:
            with open(os.path.join(os.fsencode(self.backing), CONTROL_NAME), "wb") as fh:
                fh.write(b"footage with a hostile name\n")

    def _save_manifest(self, fingerprint: str) -> None:
        tmp = self.manifest.with_suffix(".tmp")
        digests = {k.hex(): [mtime, d.hex()] for k, (mtime, d) in self._digests.items()}
        tmp.write_text(json.dumps(
            {"version": MANIFEST_VERSION, "fingerprint": fingerprint, "digests": digests}))
        os.replace(tmp, self.manifest)

    def _write(self, f: FootageFile) -> None:
        """Write one footage file, hashing it in the same pass."""
        path = os.path.join(os.fsencode(self.backing), f.name)
        h = blake3(max_threads=blake3.AUTO)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for part in iter_content(f):
                h.update(part)
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        mtime_ns = f.end_ms * 1_000_000
        os.utime(path, ns=(mtime_ns, mtime_ns))
        self._digests[f.name] = (mtime_ns, h.digest())

    def _make_hostile(self) -> None:
        base = os.fsencode(self.backing)
        for e in hostile_entries():
            path = os.path.join(base, e.name)
            if e.kind == "symlink_out":
                target = {
                    b"link_out.MP4": b"/etc/passwd",
                    b"rel_out.MP4": b"../../../../../../../../etc/hostname",
                    b"escape_dir": b"/",
                }[os.path.basename(e.name)]
                os.symlink(target, path)
            elif e.kind == "fifo":
                os.mkfifo(path, 0o644)
            elif e.kind == "device":
                os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
            else:
                with open(path, "wb") as fh:
                    fh.write(b"hostile entry " + e.kind.encode() + b"\n")

    # --- what the recorder reports -------------------------------------------------------
    def list_entries(self) -> list[Entry]:
        """The recording list: files under DCIM/ (never following symlinks), sorted."""
        base = os.fsencode(self.root)
        out: list[Entry] = []
        top = os.path.join(base, b"DCIM")
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            rel_dir = os.path.relpath(dirpath, base)
            names = filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for n in names:
                rel = os.path.join(rel_dir, n)
                if len(rel) > NAME_MAX:
                    continue  # a name the protocol cannot carry is not listed
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except OSError:
                    continue  # unreadable (path too long, I/O error): not listed
                if not stat.S_ISREG(st.st_mode) and not self.spec.faults.hostile_names:
                    continue
                known = self._files.get(rel)
                if known is not None:
                    out.append(Entry(rel, st.st_size, known.start_ms, known.end_ms))
                else:
                    mtime_ms = st.st_mtime_ns // 1_000_000
                    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
                    out.append(Entry(rel, size, mtime_ms, mtime_ms))
        out.sort(key=lambda e: (e.start_ms, e.name))
        return out

    def usage(self) -> tuple[int, int]:
        """(bytes used, number of files) of regular files under the root."""
        used = count = 0
        for dirpath, _dirs, files in os.walk(self.root, followlinks=False):
            for n in files:
                st = os.lstat(os.path.join(dirpath, n))
                if stat.S_ISREG(st.st_mode):
                    used += st.st_size
                    count += 1
        return used, count

    def delete(self, name: bytes, size: int, digest: bytes) -> None:
        """Guarded delete: remove `name` only when its size and BLAKE3 match exactly."""
        parts = name.split(b"/")
        if not name or name.startswith(b"/") or any(p in (b"", b".", b"..") for p in parts):
            raise StorageRefusal("bad_name", f"refusing unsafe name {name!r}")
        path = os.path.join(os.fsencode(self.root), name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise StorageRefusal("not_found", f"no recording {name!r}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageRefusal("bad_name", f"{name!r} is not a regular file")
        if st.st_size != size:
            raise StorageRefusal("mismatch", f"{name!r} has {st.st_size} bytes, not {size}")
        cached = self._digests.get(name)
        if cached is not None and cached[0] == st.st_mtime_ns:
            actual = cached[1]
        else:
            h = blake3(max_threads=blake3.AUTO)
            with open(path, "rb") as fh:
                while block := fh.read(4 << 20):
                    h.update(block)
            actual = h.digest()
        if actual != digest:
            raise StorageRefusal("mismatch", f"{name!r} does not match the given BLAKE3")
        os.unlink(path)
        self._digests.pop(name, None)

    def footage(self, index: int) -> FootageFile:
        return footage_files(self.spec)[index]
