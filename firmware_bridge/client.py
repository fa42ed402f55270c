"""Asyncio host-side client for one recorder on a serial port: a thin I/O shell.

The protocol decisions (request ids, which reply belongs to which request, retries,
timeouts, error mapping, the hello/auth sequence) are made by the pure
``connection.ClientConnection``; this class writes what it says to write, waits until the
deadline it names, and hands it whatever the serial port delivers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar, cast

from firmware_bridge.connection import Answered, ClientConnection, ClientStats, Failed, Transmit
from firmware_bridge.errors import LinkClosed, ProtocolError
from firmware_bridge.messages import (
    AUTH_BYTES,
    BatteryStatus,
    DeleteRecording,
    DeviceLogEvent,
    FirmwareBegin,
    FirmwareBeginRequest,
    FirmwareChunk,
    FirmwareCommit,
    FirmwareStatus,
    GetBattery,
    GetClock,
    GetEventLog,
    GetFirmwareStatus,
    GetIdentity,
    GetOfficer,
    GetStorage,
    Hello,
    Identity,
    ListRecordings,
    OfficerRecord,
    Reboot,
    RecordingInfo,
    Reply,
    Request,
    SetClock,
    SetMassStorage,
    SetOfficer,
    StorageStatus,
)
from firmware_bridge.transport import SerialLink

_R = TypeVar("_R", bound=Reply)
log = logging.getLogger(__name__)

PAGE_LIMIT = 256  # entries asked for per page; the device may send fewer
MAX_LISTING = 1_000_000  # recordings one listing may claim (a bound on memory and time)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """Device clock plus host wall-clock (time.time()) just before send / after the reply."""

    device_utc_ms: int
    sent_wall: float
    received_wall: float

    @property
    def offset_ms(self) -> float:
        """Device clock minus host clock, assuming the device read its clock mid-trip."""
        return self.device_utc_ms - (self.sent_wall + self.received_wall) * 500.0

    @property
    def round_trip_ms(self) -> float:
        return (self.received_wall - self.sent_wall) * 1000.0


class RecorderClient:
    """Talks to one recorder. Use ``await RecorderClient.open(path)``; then hello(),
    authenticate(secret), and any command."""

    def __init__(self, *, timeout: float = 2.0, retries: int = 2) -> None:
        self._conn = ClientConnection(timeout=timeout, retries=retries)
        self._link: SerialLink | None = None
        self._outcome: asyncio.Future[Answered | Failed] | None = None
        self._lock = asyncio.Lock()
        self._sent_wall = 0.0  # time.time() of the latest write

    @property
    def timeout(self) -> float:
        return self._conn.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        if value <= 0:
            raise ValueError("timeout must be > 0")
        self._conn.timeout = value

    @property
    def retries(self) -> int:
        return self._conn.retries

    @retries.setter
    def retries(self, value: int) -> None:
        if value < 0:
            raise ValueError("retries must be >= 0")
        self._conn.retries = value

    @property
    def stats(self) -> ClientStats:
        return self._conn.stats

    @property
    def hello_info(self) -> Hello | None:
        return self._conn.hello_info

    @classmethod
    async def open(
        cls,
        tty_path: str,
        *,
        baudrate: int = 115200,
        timeout: float = 2.0,  # noqa: ASYNC109 - per-command reply timeout, not for open()
        retries: int = 2,
    ) -> RecorderClient:
        """Open ``tty_path`` exclusively; LinkClosed if it cannot be opened."""
        client = cls(timeout=timeout, retries=retries)
        client._link = await SerialLink.open(tty_path, baudrate, client._on_data, client._on_lost)
        return client

    async def close(self) -> None:
        self._on_lost("client closed")
        if self._link is not None:
            await self._link.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._conn.closed is None and self._link is not None and self._link.is_open

    # ------------------------------------------------------------ commands

    async def hello(self) -> Hello:
        """Negotiate the protocol version; also resets the device's authentication."""
        return self._conn.hello_received(await self._call(self._conn.hello_request()))

    async def authenticate(self, secret: bytes) -> None:
        """Mutual challenge-response; AuthRefused if either side's proof is wrong."""
        challenge = await self._call(self._conn.auth_start())
        prove = self._conn.auth_prove(challenge, secret, secrets.token_bytes(AUTH_BYTES))
        self._conn.auth_accepted(await self._call(prove))

    async def identity(self) -> Identity:
        return await self._call(GetIdentity())

    async def get_officer(self) -> OfficerRecord:
        return await self._call(GetOfficer())

    async def set_officer(self, record: OfficerRecord) -> None:
        await self._call(SetOfficer(record))

    async def get_clock(self) -> ClockReading:
        reply = await self._call(GetClock())
        return ClockReading(reply.utc_ms, self._sent_wall, time.time())

    async def set_clock(self, utc_ms: int) -> None:
        await self._call(SetClock(utc_ms))

    async def battery(self) -> BatteryStatus:
        return await self._call(GetBattery())

    async def storage(self) -> StorageStatus:
        return await self._call(GetStorage())

    async def set_mass_storage(self, on: bool) -> None:
        await self._call(SetMassStorage(on))

    async def list_recordings(
        self, on_page: Callable[[int, int], None] | None = None
    ) -> list[RecordingInfo]:
        """Every recording on the device, fetched page by page.

        Each page is one request with its own timeout and retries; `on_page(received,
        total)` is called after each page, so a caller bounding the whole listing can
        renew its deadline on progress instead of giving it all one budget."""
        out: list[RecordingInfo] = []
        await self.read_recordings(out.extend, on_page)
        return out

    async def read_recordings(self, take: Callable[[tuple[RecordingInfo, ...]], None],
                              on_page: Callable[[int, int], None] | None = None) -> int:
        """As `list_recordings`, each page's entries handed to `take` as it arrives
        (nothing kept: a long listing need not be held whole); returns the count."""
        offset = 0
        while True:
            page = await self._call(ListRecordings(offset, PAGE_LIMIT))
            if page.total > MAX_LISTING:
                raise ProtocolError(f"device claims {page.total} recordings; at most"
                                    f" {MAX_LISTING} are accepted")
            take(page.entries)
            offset += len(page.entries)
            if on_page is not None:
                on_page(offset, page.total)
            if not page.entries or offset >= page.total:
                return offset

    async def delete_recording(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        """Guarded delete; DeviceError(NOT_FOUND / MISMATCH) unless name, size, hash match."""
        await self._call(DeleteRecording(name, size, blake3_digest))

    async def event_log(
        self, since_index: int = 0, limit: int | None = None,
        on_page: Callable[[int, int], None] | None = None,
    ) -> list[DeviceLogEvent]:
        """Device event-log entries with index >= since_index, oldest first; with `limit`,
        stop once at least that many are read (the caller continues from the last + 1);
        `on_page` as for `list_recordings` (entries received, one-past-newest index)."""
        out: list[DeviceLogEvent] = []
        index = since_index
        while limit is None or len(out) < limit:
            page = await self._call(GetEventLog(index, PAGE_LIMIT))
            if on_page is not None:
                on_page(len(out) + len(page.entries), page.end_index)
            if not page.entries:
                return out
            if page.entries[0].index < index or any(
                b.index <= a.index for a, b in zip(page.entries, page.entries[1:], strict=False)
            ):
                raise ProtocolError("event log page out of order")
            out.extend(page.entries)
            index = page.entries[-1].index + 1
            if index >= page.end_index:
                return out
        return out

    async def firmware_status(self) -> FirmwareStatus:
        return await self._call(GetFirmwareStatus())

    async def firmware_begin(self, manifest_bytes: bytes, signature: bytes) -> FirmwareBegin:
        """Offer a signed manifest; the reply says where to continue (the recorder's durable
        offset for this image, 0 for a new one) and the largest chunk it takes."""
        return await self._call(FirmwareBeginRequest(manifest_bytes, signature))

    async def firmware_chunk(self, offset: int, data: bytes) -> int:
        """Send image bytes at ``offset``; returns the recorder's durable offset, which may
        lag ``offset + len(data)`` (it syncs every few chunks)."""
        chunk = FirmwareChunk(offset, zlib.crc32(data), data)
        return (await self._call(chunk)).durable_offset

    async def firmware_commit(self) -> None:
        """The recorder verifies the whole staged image and marks it for the next boot."""
        await self._call(FirmwareCommit())

    async def reboot(self) -> None:
        """The recorder reboots after this reply: the link closes and it re-enumerates.

        A link that closes after the request went out counts as the reboot (the recorder may
        leave the bus before its Ok gets through)."""
        if not self.is_open:
            raise self._conn.closed or LinkClosed("client is not open")
        try:
            await self._call(Reboot())
        except LinkClosed:
            log.info("recorder left the bus before acknowledging the reboot")

    # ------------------------------------------------------------ I/O shell

    async def _call(self, request: Request[_R]) -> _R:
        """Send ``request`` and wait for its reply, as the connection decides."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            step: Transmit | Failed = self._conn.send(request, loop.time())
            try:
                while isinstance(step, Transmit):
                    if step.attempt > 1:
                        log.debug("retrying %s (attempt %d)", type(request).__name__,
                                  step.attempt)
                    outcome = await self._exchange(step, loop)
                    if isinstance(outcome, Answered):
                        return cast(_R, outcome.reply)  # the connection checked its type
                    step = outcome if outcome is not None else self._conn.timed_out(loop.time())
            except BaseException:  # cancelled, or the link is gone: nothing stays outstanding
                self._conn.abandon()
                raise
            raise step.error

    async def _exchange(self, step: Transmit, loop: asyncio.AbstractEventLoop
                        ) -> Answered | Failed | None:
        """Write one attempt and wait for its outcome until its deadline (None: timed out)."""
        if self._link is None:
            raise LinkClosed("client is not open")
        fut = self._outcome = loop.create_future()
        try:
            self._sent_wall = time.time()
            self._link.write(step.data)
            try:
                async with asyncio.timeout(step.deadline - loop.time()):
                    return await asyncio.shield(fut)
            except TimeoutError:
                return None
        finally:
            self._outcome = None
            if not fut.done():
                fut.cancel()

    def _deliver(self, outcome: Answered | Failed | None) -> None:
        fut = self._outcome
        if outcome is not None and fut is not None and not fut.done():
            fut.set_result(outcome)

    def _on_data(self, data: bytes) -> None:
        self._deliver(self._conn.receive_data(data))

    def _on_lost(self, reason: str) -> None:
        if self._conn.closed is None:
            log.info("recorder link lost: %s", reason)
        self._deliver(self._conn.connection_lost(reason))
