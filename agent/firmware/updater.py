"""One firmware update of one docked recorder: begin -> chunks -> commit -> reboot.

The transfer starts at the offset the recorder reports for this image (its durable offset:
a transfer cut by an unplug or an agent kill -9 continues where the recorder's flash has
it); a chunk the recorder refuses for a wrong offset resyncs to the offset it names. The
dock's attempt row follows the recorder's durable offset, and is marked `rebooting` before
the reboot is sent: what the recorder runs afterwards is read at its next docking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.firmware.errors import UpdateRefused
from agent.firmware.ports import FirmwareLink
from agent.firmware.records import UpdateRecords, Who
from agent.firmware.store import Attempt, StagedPackage
from firmware_bridge.errors import FirmwareRefused
from firmware_bridge.fwpackage import PackageError, PackageHeader, read_header, verify_image

log = logging.getLogger(__name__)

# Timeouts use asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
# session's cancellation (an unplug) when the link error and the cancel arrive together.
READ_BLOCK = 1 << 20  # image read from disk per worker-thread call
RECORD_EVERY_BYTES = 1 << 20  # the dock's attempt row follows the durable offset this often
RECORD_EVERY_S = 2.0
MAX_RESYNCS = 32  # offset disagreements in one transfer before giving up
COMMIT_FLOOR_S = 60.0  # the recorder hashes and checks the whole image


@dataclass(frozen=True)
class Progress:
    serial: str
    bay: str
    to_version: str
    bytes_sent: int
    durable: int
    size: int
    rate_bps: float
    resumed_from: int

    def as_dict(self) -> dict[str, object]:
        return {"serial": self.serial, "bay": self.bay, "to_version": self.to_version,
                "bytes_sent": self.bytes_sent, "durable_offset": self.durable,
                "size": self.size, "rate_bps": round(self.rate_bps, 1),
                "resumed_from": self.resumed_from,
                "percent": round(100.0 * self.durable / self.size, 1) if self.size else 0.0}


@dataclass(frozen=True)
class UpdateJob:
    """The narrow inputs of one update."""

    link: FirmwareLink
    who: Who
    running: str
    package: StagedPackage
    package_file: Path
    resume: Attempt | None  # the dock's open attempt of this package on this recorder
    chunk_timeout_s: float


ProgressHook = Callable[[Progress], None]


def _load_header(path: Path) -> PackageHeader:
    """Blocking: the staged package's header, its image re-verified against the manifest."""
    with path.open("rb") as f:
        header = read_header(f)
        verify_image(header, f)
    return header


def _read_at(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


async def run_update(job: UpdateJob, records: UpdateRecords,
                     on_progress: ProgressHook = lambda p: None) -> Attempt:
    """Transfer, commit and reboot. Raises UpdateRefused (recorded as failed) when the dock
    or the recorder refuses; link errors and cancellation propagate with the attempt left
    open to resume."""
    pkg = job.package.facts
    try:
        header = await asyncio.to_thread(_load_header, job.package_file)
    except (OSError, PackageError) as exc:
        raise UpdateRefused(f"staged package {pkg.version} is unreadable or damaged: {exc}"
                            ) from exc
    if header.manifest.blake3 != pkg.blake3:
        raise UpdateRefused(f"staged file of package {pkg.version} holds another image")
    try:
        async with asyncio.timeout(job.chunk_timeout_s):
            begin = await job.link.firmware_begin(header.manifest_bytes, header.signature)
    except FirmwareRefused as exc:
        raise UpdateRefused(f"the recorder refused the update: {exc}") from exc
    offset = begin.offset
    if not 0 <= offset <= pkg.size or begin.chunk_max < 1:
        raise UpdateRefused(f"the recorder answered begin with offset {offset}, chunk size"
                            f" {begin.chunk_max} for an image of {pkg.size} bytes")
    resume = job.resume if job.resume is not None and job.resume.package == pkg.blake3 else None
    attempt = await records.start(job.who, pkg, job.running, offset, resume)
    await _send_image(job, header, attempt, offset, begin.chunk_max, records, on_progress)
    try:
        async with asyncio.timeout(max(COMMIT_FLOOR_S, job.chunk_timeout_s)):
            await job.link.firmware_commit()
    except FirmwareRefused as exc:
        raise UpdateRefused(f"the recorder refused to commit the image: {exc}") from exc
    await records.rebooting(attempt.id, pkg.size)
    try:
        async with asyncio.timeout(job.chunk_timeout_s):
            await job.link.reboot()
    except Exception as exc:  # the recorder may go before it answers: its next docking tells
        log.info("bay %s: reboot of %s: %s", job.who.bay, job.who.serial, exc)
    return attempt


async def _send_image(job: UpdateJob, header: PackageHeader, attempt: Attempt, offset: int,
                      chunk_max: int, records: UpdateRecords, on_progress: ProgressHook) -> None:
    size = job.package.facts.size
    started, start_offset = time.monotonic(), offset
    recorded, recorded_at, durable, resyncs = offset, started, offset, 0
    with job.package_file.open("rb") as f:
        while offset < size:
            block = await asyncio.to_thread(_read_at, f, header.image_offset + offset,
                                            min(READ_BLOCK, size - offset))
            pos = 0
            while pos < len(block):
                data = block[pos:pos + chunk_max]
                try:
                    async with asyncio.timeout(job.chunk_timeout_s):
                        durable = await job.link.firmware_chunk(offset, data)
                except FirmwareRefused as exc:
                    resyncs += 1
                    if exc.durable_offset is None or resyncs > MAX_RESYNCS:
                        raise UpdateRefused(f"the recorder refused a chunk at {offset}: {exc}"
                                            ) from exc
                    offset = durable = min(max(exc.durable_offset, 0), size)
                    break  # re-read from the recorder's offset
                offset += len(data)
                pos += len(data)
                now = time.monotonic()
                on_progress(Progress(job.who.serial, job.who.bay, job.package.facts.version,
                                     offset, durable, size,
                                     (offset - start_offset) / max(now - started, 1e-6),
                                     start_offset))
                if durable - recorded >= RECORD_EVERY_BYTES or now - recorded_at >= RECORD_EVERY_S:
                    await records.progress(attempt.id, durable)
                    recorded, recorded_at = durable, now
    await records.progress(attempt.id, durable)
