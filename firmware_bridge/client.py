"""Asyncio host-side client for one recorder on a serial port.

One command is in flight at a time (recorders handle commands serially). Each command has
a timeout; only idempotent commands are retried after a timeout, each retry under a new
request id so a late reply to an earlier attempt is recognised and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Self, TypeVar

from firmware_bridge import auth
from firmware_bridge.codec import (
    MAX_REQUEST_ID,
    DecoderStats,
    Frame,
    FrameDecoder,
    Rejected,
    encode_frame,
)
from firmware_bridge.errors import (
    AuthRefused,
    DeviceError,
    FirmwareRefused,
    LinkClosed,
    LinkTimeout,
    ProtocolError,
)
from firmware_bridge.messages import (
    AUTH_BYTES,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    AuthAccepted,
    AuthChallenge,
    AuthProve,
    AuthStart,
    BatteryStatus,
    ClockTime,
    DeleteRecording,
    DeviceLogEvent,
    ErrorCode,
    ErrorReply,
    EventLogPage,
    FirmwareBegin,
    FirmwareBeginRequest,
    FirmwareChunk,
    FirmwareCommit,
    FirmwareProgress,
    FirmwareRefusal,
    FirmwareStatus,
    GetBattery,
    GetClock,
    GetEventLog,
    GetFirmwareStatus,
    GetIdentity,
    GetOfficer,
    GetStorage,
    Hello,
    HelloRequest,
    Identity,
    ListRecordings,
    Message,
    OfficerRecord,
    Ok,
    Reboot,
    RecordingInfo,
    RecordingPage,
    SetClock,
    SetMassStorage,
    SetOfficer,
    StorageStatus,
)
from firmware_bridge.transport import SerialLink

_R = TypeVar("_R", bound=Message)
log = logging.getLogger(__name__)

PAGE_LIMIT = 256  # entries asked for per page; the device may send fewer
MAX_LISTING = 1_000_000  # recordings one listing may claim (a bound on memory and time)


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    idempotent: bool  # safe to send again when the reply may have been lost
    min_timeout: float = 0.0  # floor under the client's timeout for slow commands


# Why each is or is not idempotent is in docs/protocol.md ("Timeouts and retries").
POLICIES: dict[type[Message], CommandPolicy] = {
    HelloRequest: CommandPolicy(True),
    AuthStart: CommandPolicy(True),
    AuthProve: CommandPolicy(False),  # the challenge is single-use
    GetIdentity: CommandPolicy(True),
    GetOfficer: CommandPolicy(True),
    SetOfficer: CommandPolicy(True),
    GetClock: CommandPolicy(True),
    SetClock: CommandPolicy(False),  # a late re-send would set a stale time
    GetBattery: CommandPolicy(True),
    GetStorage: CommandPolicy(True),
    SetMassStorage: CommandPolicy(True, min_timeout=10.0),
    ListRecordings: CommandPolicy(True),
    DeleteRecording: CommandPolicy(False, min_timeout=120.0),  # device hashes the file
    GetEventLog: CommandPolicy(True),
    GetFirmwareStatus: CommandPolicy(True),
    FirmwareBeginRequest: CommandPolicy(True, min_timeout=10.0),  # same image: same answer
    # the recorder takes a chunk again anywhere between its durable and received offsets
    FirmwareChunk: CommandPolicy(True, min_timeout=10.0),
    FirmwareCommit: CommandPolicy(False, min_timeout=120.0),  # hashes and copies the image
    Reboot: CommandPolicy(False),
}
_FIRMWARE_REQUESTS = (GetFirmwareStatus, FirmwareBeginRequest, FirmwareChunk, FirmwareCommit,
                      Reboot)

_AUTH_CODES = (ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED, ErrorCode.NO_CHALLENGE)


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


@dataclass(slots=True)
class ClientStats:
    decoder: DecoderStats = field(default_factory=DecoderStats)
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    unexpected_replies: int = 0  # valid frames for no outstanding request
    error_replies: int = 0

    @property
    def frames_discarded(self) -> int:
        return self.decoder.discarded

    @property
    def crc_errors(self) -> int:
        return self.decoder.crc_errors

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "decoder"}
        d.update({f"decoder_{k}": v for k, v in self.decoder.as_dict().items()})
        return d


class RecorderClient:
    """Talks to one recorder. Use ``await RecorderClient.open(path)``; then hello(),
    authenticate(secret), and any command."""

    def __init__(self, *, timeout: float = 2.0, retries: int = 2) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.timeout = timeout
        self.retries = retries
        self.stats = ClientStats()
        self.hello_info: Hello | None = None
        self._decoder = FrameDecoder()
        self.stats.decoder = self._decoder.stats
        self._link: SerialLink | None = None
        self._closed: LinkClosed | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()

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
        self._fail_all(LinkClosed("client closed"))
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
        return self._closed is None and self._link is not None and self._link.is_open

    # ------------------------------------------------------------ commands

    async def hello(self) -> Hello:
        """Negotiate the protocol version; also resets the device's authentication."""
        reply = await self._call(HelloRequest(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION), Hello)
        if not MIN_PROTOCOL_VERSION <= reply.protocol_version <= PROTOCOL_VERSION:
            raise ProtocolError(f"device chose unsupported version {reply.protocol_version}")
        self.hello_info = reply
        return reply

    async def authenticate(self, secret: bytes) -> None:
        """Mutual challenge-response; AuthRefused if either side's proof is wrong."""
        challenge = (await self._call(AuthStart(), AuthChallenge)).challenge
        nonce = secrets.token_bytes(AUTH_BYTES)
        proof = auth.host_proof(secret, challenge, nonce)
        accepted = await self._call(AuthProve(nonce, proof), AuthAccepted)
        expected = auth.device_proof(secret, challenge, nonce)
        if not auth.proofs_equal(expected, accepted.device_proof):
            raise AuthRefused("recorder failed to prove it knows the fleet secret")

    async def identity(self) -> Identity:
        return await self._call(GetIdentity(), Identity)

    async def get_officer(self) -> OfficerRecord:
        return await self._call(GetOfficer(), OfficerRecord)

    async def set_officer(self, record: OfficerRecord) -> None:
        await self._call(SetOfficer(record), Ok)

    async def get_clock(self) -> ClockReading:
        sent: list[float] = []
        reply = await self._call(GetClock(), ClockTime, sent_at=sent)
        received = time.time()
        return ClockReading(reply.utc_ms, sent[-1], received)

    async def set_clock(self, utc_ms: int) -> None:
        await self._call(SetClock(utc_ms), Ok)

    async def battery(self) -> BatteryStatus:
        return await self._call(GetBattery(), BatteryStatus)

    async def storage(self) -> StorageStatus:
        return await self._call(GetStorage(), StorageStatus)

    async def set_mass_storage(self, on: bool) -> None:
        await self._call(SetMassStorage(on), Ok)

    async def list_recordings(
        self, on_page: Callable[[int, int], None] | None = None
    ) -> list[RecordingInfo]:
        """Every recording on the device, fetched page by page.

        Each page is one request with its own timeout and retries; `on_page(received,
        total)` is called after each page, so a caller bounding the whole listing can
        renew its deadline on progress instead of giving it all one budget."""
        out: list[RecordingInfo] = []
        offset = 0
        while True:
            page = await self._call(ListRecordings(offset, PAGE_LIMIT), RecordingPage)
            if page.total > MAX_LISTING:
                raise ProtocolError(f"device claims {page.total} recordings; at most"
                                    f" {MAX_LISTING} are accepted")
            out.extend(page.entries)
            offset += len(page.entries)
            if on_page is not None:
                on_page(offset, page.total)
            if not page.entries or offset >= page.total:
                return out

    async def delete_recording(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        """Guarded delete; DeviceError(NOT_FOUND / MISMATCH) unless name, size, hash match."""
        await self._call(DeleteRecording(name, size, blake3_digest), Ok)

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
            page = await self._call(GetEventLog(index, PAGE_LIMIT), EventLogPage)
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
        return await self._call(GetFirmwareStatus(), FirmwareStatus)

    async def firmware_begin(self, manifest_bytes: bytes, signature: bytes) -> FirmwareBegin:
        """Offer a signed manifest; the reply says where to continue (the recorder's durable
        offset for this image, 0 for a new one) and the largest chunk it takes."""
        return await self._call(FirmwareBeginRequest(manifest_bytes, signature), FirmwareBegin)

    async def firmware_chunk(self, offset: int, data: bytes) -> int:
        """Send image bytes at ``offset``; returns the recorder's durable offset, which may
        lag ``offset + len(data)`` (it syncs every few chunks)."""
        chunk = FirmwareChunk(offset, zlib.crc32(data), data)
        return (await self._call(chunk, FirmwareProgress)).durable_offset

    async def firmware_commit(self) -> None:
        """The recorder verifies the whole staged image and marks it for the next boot."""
        await self._call(FirmwareCommit(), Ok)

    async def reboot(self) -> None:
        """The recorder reboots after this reply: the link closes and it re-enumerates.

        A link that closes after the request went out counts as the reboot (the recorder may
        leave the bus before its Ok gets through)."""
        if not self.is_open:
            raise self._closed or LinkClosed("client is not open")
        try:
            await self._call(Reboot(), Ok)
        except LinkClosed:
            log.info("recorder left the bus before acknowledging the reboot")

    # ------------------------------------------------------------ request machinery

    async def _call(
        self, request: Message, expect: type[_R], *, sent_at: list[float] | None = None
    ) -> _R:
        policy = POLICIES[type(request)]
        timeout = max(self.timeout, policy.min_timeout)
        attempts = 1 + (self.retries if policy.idempotent else 0)
        async with self._lock:
            for attempt in range(attempts):
                if attempt:
                    self.stats.retries += 1
                    log.debug("retrying %s (attempt %d)", type(request).__name__, attempt + 1)
                reply = await self._attempt(request, timeout, sent_at)
                if reply is not None:
                    return self._check(request, reply, expect)
            raise LinkTimeout(
                f"{type(request).__name__}: no reply within {timeout:g}s after {attempts} "
                f"attempt(s)"
            )

    async def _attempt(
        self, request: Message, limit_s: float, sent_at: list[float] | None
    ) -> Message | None:
        """The reply, or None on timeout."""
        if self._closed is not None:
            raise self._closed
        if self._link is None:
            raise LinkClosed("client is not open")
        request_id = self._new_id()
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            if sent_at is not None:
                sent_at.append(time.time())
            self._link.write(encode_frame(request_id, request))
            self.stats.requests += 1
            try:
                return await asyncio.wait_for(asyncio.shield(fut), limit_s)
            except TimeoutError:
                self.stats.timeouts += 1
                return None
        finally:
            self._pending.pop(request_id, None)
            if not fut.done():
                fut.cancel()

    def _check(self, request: Message, reply: Message, expect: type[_R]) -> _R:
        if isinstance(reply, FirmwareRefusal):
            self.stats.error_replies += 1
            raise FirmwareRefused(reply.code, reply.message, reply.durable_offset)
        if isinstance(reply, ErrorReply):
            self.stats.error_replies += 1
            if reply.code in _AUTH_CODES:
                raise AuthRefused(reply.message or ErrorCode(reply.code).name, reply.code)
            if isinstance(request, _FIRMWARE_REQUESTS):
                raise FirmwareRefused(reply.code, reply.message)
            raise DeviceError(reply.code, reply.message)
        if not isinstance(reply, expect):
            raise ProtocolError(f"{type(request).__name__} answered with {type(reply).__name__}")
        return reply

    def _new_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = rid % MAX_REQUEST_ID + 1  # 1..65535, 0 never used
            if rid not in self._pending:
                return rid

    def _on_data(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            fut = self._pending.get(item.request_id)
            if fut is None or fut.done():
                if isinstance(item, Frame):
                    self.stats.unexpected_replies += 1
                continue
            if isinstance(item, Rejected):
                fut.set_exception(item.error)
            elif item.message.IS_REQUEST:
                fut.set_exception(ProtocolError("device sent a request type as a reply"))
            else:
                fut.set_result(item.message)

    def _on_lost(self, reason: str) -> None:
        log.info("recorder link lost: %s", reason)
        self._fail_all(LinkClosed(f"recorder link lost: {reason}"))

    def _fail_all(self, exc: LinkClosed) -> None:
        if self._closed is None:
            self._closed = exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._closed)
        self._pending.clear()
