"""Test helpers: an in-memory recorder (a real RecorderHandler) and a pty-served device."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import blake3

from firmware_bridge.cobs import cobs_encode
from firmware_bridge.codec import CRC, HEADER
from firmware_bridge.messages import (
    BatteryStatus,
    DeviceLogEvent,
    ErrorCode,
    EventLogPage,
    Identity,
    LogKind,
    OfficerRecord,
    RecordingInfo,
    RecordingPage,
    StorageStatus,
)
from hw_sim.endpoint import DeviceEndpoint, DeviceFault, DeviceServer, PtyPair

SECRET = b"fleet secret used only by the firmware_bridge tests"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class MemoryRecorder:
    """A RecorderHandler keeping files and state in memory; records every call."""

    def __init__(self, n_files: int = 3) -> None:
        self.calls: list[str] = []
        self.ident = Identity("DA000042", "BWC-7", "rev C", "2.4.1")
        self.officer = OfficerRecord("", "", "", "")
        self.clock_ms = T0
        self.mass_storage = False
        self.files: dict[bytes, bytes] = {}
        self.times: dict[bytes, tuple[int, int]] = {}
        for i in range(n_files):
            self.add_file(f"DCIM/100REC/V{i:05d}.MP4".encode(), bytes([i % 251]) * (1000 + i))
        self.log: list[DeviceLogEvent] = [
            DeviceLogEvent(0, T0, LogKind.POWER_ON, "boot"),
            DeviceLogEvent(1, T0 + 1000, LogKind.RECORDING_START, "V00000"),
            DeviceLogEvent(2, T0 + 61000, LogKind.RECORDING_STOP, "V00000"),
        ]

    def add_file(self, name: bytes, data: bytes) -> None:
        self.files[name] = data
        start = T0 + 60_000 * len(self.files)
        self.times[name] = (start, start + 30_000)

    def identity(self) -> Identity:
        self.calls.append("identity")
        return self.ident

    def get_officer(self) -> OfficerRecord:
        self.calls.append("get_officer")
        return self.officer

    def set_officer(self, record: OfficerRecord) -> None:
        self.calls.append("set_officer")
        self.officer = record

    def get_clock(self) -> int:
        self.calls.append("get_clock")
        return self.clock_ms

    def set_clock(self, utc_ms: int) -> None:
        self.calls.append("set_clock")
        self.clock_ms = utc_ms

    def battery(self) -> BatteryStatus:
        self.calls.append("battery")
        return BatteryStatus(87, 4012, True, 31.5, 120, 96)

    def storage(self) -> StorageStatus:
        self.calls.append("storage")
        used = sum(len(d) for d in self.files.values())
        return StorageStatus(64 * 2**30, 64 * 2**30 - used, len(self.files), False)

    def set_mass_storage(self, on: bool) -> None:
        self.calls.append("set_mass_storage")
        self.mass_storage = on

    def list_recordings(self, offset: int, limit: int) -> RecordingPage:
        self.calls.append("list_recordings")
        names = sorted(self.files)
        page = tuple(
            RecordingInfo(n, len(self.files[n]), *self.times[n])
            for n in names[offset : offset + limit]
        )
        return RecordingPage(len(names), page)

    def delete_recording(self, name: bytes, size: int, digest: bytes) -> None:
        self.calls.append("delete_recording")
        data = self.files.get(name)
        if data is None:
            raise DeviceFault(ErrorCode.NOT_FOUND, "no such recording")
        if len(data) != size or blake3.blake3(data).digest() != digest:
            raise DeviceFault(ErrorCode.MISMATCH, "size or hash differs")
        del self.files[name]

    def event_log(self, since_index: int, limit: int) -> EventLogPage:
        self.calls.append("event_log")
        entries = tuple(e for e in self.log if e.index >= since_index)[:limit]
        return EventLogPage(len(self.log), entries)


def raw_frame(type_id: int, rid: int, payload: bytes, crc: int | None = None) -> bytes:
    """A frame built by hand, so tests can make it wrong on purpose."""
    body = HEADER.pack(type_id, rid) + payload
    trailer = CRC.pack(zlib.crc32(body) if crc is None else crc)
    return b"\x00" + cobs_encode(body + trailer) + b"\x00"


ReplyFilter = Callable[[bytes], Awaitable[bytes | None]]


@dataclass
class Device:
    """A recorder on a pty: the test swaps ``reply_filter`` to inject faults."""

    pty: PtyPair
    recorder: MemoryRecorder
    endpoint: DeviceEndpoint
    server: DeviceServer
    task: asyncio.Task[None]
    reply_filter: ReplyFilter | None = None
    replies_seen: list[bytes] = field(default_factory=list)

    async def filter(self, frame: bytes) -> bytes | None:
        self.replies_seen.append(frame)
        if self.reply_filter is None:
            return frame
        return await self.reply_filter(frame)

    async def unplug(self) -> None:
        await self.server.aclose()
        self.pty.close()
