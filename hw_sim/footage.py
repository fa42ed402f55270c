"""Deterministic footage: names, recording times and content of a recorder's files.

Content is the BLAKE3 extended output keyed by (seed, serial, file index) behind a
24-byte MP4 `ftyp` box, so any byte range is computable directly (no state) and
generation runs at several hundred MB/s.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from blake3 import blake3

from hw_sim.spec import RecorderSpec

FOOTAGE_DIR = b"DCIM/100BWC"
FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
CHUNK = 4 << 20


@dataclass(frozen=True, slots=True)
class FootageFile:
    """One footage file of a spec: where it lives and when it was recorded."""

    index: int
    name: bytes  # relative to the storage root, '/'-separated
    size: int
    start_ms: int
    end_ms: int
    key: bytes  # content key

    @property
    def path_str(self) -> str:
        return self.name.decode()


@dataclass(frozen=True, slots=True)
class ExpectedFile:
    """A footage file as an offload must reproduce it."""

    name: bytes
    size: int
    blake3: bytes  # 32-byte digest of the whole file
    start_ms: int
    end_ms: int

    @property
    def blake3_hex(self) -> str:
        return self.blake3.hex()


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d_%H%M%S")


def footage_files(spec: RecorderSpec) -> list[FootageFile]:
    """The spec's footage files in recording order."""
    fs = spec.footage
    assert fs.start_ms is not None  # resolved by FootageSpec
    out: list[FootageFile] = []
    t = fs.start_ms
    for i, size in enumerate(fs.file_sizes):
        duration_ms = max(1000, size * 8 * 1000 // fs.bitrate_bps)
        officer = f"{fs.officer_no}_" if fs.officer_no else ""
        name = f"{spec.serial}_{officer}{_stamp(t)}_{i:04d}.MP4".encode()
        key = blake3(
            b"hw_sim footage v1\0" + struct.pack(">qI", fs.seed, i) + spec.serial.encode()
        ).digest()
        out.append(FootageFile(i, FOOTAGE_DIR + b"/" + name, size, t, t + duration_ms, key))
        t += duration_ms + int(fs.gap_s * 1000)
    return out


def content(f: FootageFile, offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the file, clipped to its size."""
    length = max(0, min(length, f.size - offset))
    if length == 0:
        return b""
    data = blake3(key=f.key).digest(length=length, seek=offset)
    if offset < len(FTYP):
        head = FTYP[offset : offset + length]
        data = head + data[len(head) :]
    return data


def iter_content(f: FootageFile, chunk: int = CHUNK) -> Iterator[bytes]:
    for off in range(0, f.size, chunk):
        yield content(f, off, chunk)


def file_bytes(f: FootageFile) -> bytes:
    """The whole file in memory (for small files in tests)."""
    return content(f, 0, f.size)


@functools.lru_cache(maxsize=256)
def _digest(f: FootageFile) -> bytes:
    h = blake3(max_threads=blake3.AUTO)
    for part in iter_content(f):
        h.update(part)
    return h.digest()


def expected_files(spec: RecorderSpec) -> list[ExpectedFile]:
    """Name, size, BLAKE3 and recording times of every footage file.

    Hashing generates the content (hundreds of MB/s); hashes are cached per process. For
    large footage call it off the event loop (`asyncio.to_thread`).
    """
    return [
        ExpectedFile(f.name, f.size, _digest(f), f.start_ms, f.end_ms)
        for f in footage_files(spec)
    ]
