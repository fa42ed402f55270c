"""Device side of the recorder protocol: a sans-I/O endpoint plus a small pty server.

A development and simulation part (virtual and gadget recorders, tests): the production
wheel ships only the host side in ``firmware_bridge``.

How a virtual recorder (hw_sim) uses it::

    class MyRecorder:                      # implements RecorderHandler
        def identity(self) -> Identity: ...
        ...                                # raise DeviceFault(ErrorCode.X, "why") to refuse

    pty = open_pty()                       # raw pty; pty.slave_path is the "USB serial port"
    endpoint = DeviceEndpoint(MyRecorder(), secret=fleet_secret)
    server = DeviceServer(pty.master_fd, endpoint, reply_filter=None)
    task = asyncio.create_task(server.run())
    ...                                    # the agent opens pty.slave_path
    server.inject(b"\\x13junk")             # line noise, whenever wanted
    endpoint.reset()                       # power cycle: forget hello and authentication
    await server.aclose(); pty.close()     # unplug: closing the master is what the host sees

``DeviceEndpoint`` enforces the session rules for every implementation: HelloRequest first
(version negotiation), then authentication, then any command. Handler methods run on the
caller's thread and should return promptly; a slow one (hashing a big file for a guarded
delete) stalls the line exactly like a busy recorder would, and stalls the event loop too
unless the server is made with ``handler_in_thread=True``.

Fault injection: ``reply_filter`` is awaited with each encoded reply frame and returns the
bytes to send (possibly garbled or truncated), or None to suppress the reply; it may sleep
to delay it. ``request_filter`` (sync) sees raw incoming chunks and returns what the device
"hears" (drop or corrupt requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import struct
import termios
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar

from firmware_bridge import auth
from firmware_bridge.codec import FrameDecoder, Rejected, encode_frame
from firmware_bridge.errors import BridgeError
from firmware_bridge.messages import (
    AUTH_BYTES,
    MAX_PAYLOAD,
    MESSAGE_TYPES,
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

log = logging.getLogger(__name__)

_PAGE_HEADER = 6  # u32 total/end_index + u16 count
_T = TypeVar("_T")
_E = TypeVar("_E", RecordingInfo, DeviceLogEvent)


class DeviceFault(Exception):
    """Raised by a RecorderHandler method to answer the command with an error reply."""

    def __init__(self, code: int, message: str = "", durable_offset: int | None = None) -> None:
        super().__init__(message or str(code))
        self.code = int(code)
        self.message = message
        self.durable_offset = durable_offset  # firmware refusals: where the host resumes


class RecorderHandler(Protocol):
    """What a recorder implementation provides: one method per command."""

    def identity(self) -> Identity: ...

    def get_officer(self) -> OfficerRecord: ...

    def set_officer(self, record: OfficerRecord) -> None: ...

    def get_clock(self) -> int:
        """Device UTC clock, ms since the Unix epoch."""
        ...

    def set_clock(self, utc_ms: int) -> None: ...

    def battery(self) -> BatteryStatus: ...

    def storage(self) -> StorageStatus: ...

    def set_mass_storage(self, on: bool) -> None: ...

    def list_recordings(self, offset: int, limit: int) -> RecordingPage:
        """``RecordingPage(total=len(all), entries=tuple(all[offset:offset + limit]))``.

        The endpoint trims the page further if it would not fit one frame.
        """
        ...

    def delete_recording(self, name: bytes, size: int, digest: bytes) -> None:
        """Delete only if ``name`` exists with exactly this size and BLAKE3 digest.

        Raise DeviceFault(NOT_FOUND) / DeviceFault(MISMATCH) otherwise.
        """
        ...

    def event_log(self, since_index: int, limit: int) -> EventLogPage:
        """Entries with index >= since_index (at most ``limit``), and one-past-newest index."""
        ...

    def firmware_status(self) -> FirmwareStatus: ...

    def firmware_begin(self, manifest: bytes, signature: bytes) -> FirmwareBegin:
        """Check the manifest (signature, model, versions); resume offset and chunk size."""
        ...

    def firmware_chunk(self, offset: int, crc32: int, data: bytes) -> int:
        """Stage ``data`` at ``offset``; returns the durable offset. Refusals carry it too:
        ``DeviceFault(code, message, durable_offset)``."""
        ...

    def firmware_commit(self) -> None: ...

    def reboot(self) -> None:
        """Arrange a reboot once this reply is on the line."""
        ...


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    errors_sent: int = 0
    auth_failures: int = 0
    handler_crashes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


class DeviceEndpoint:
    """Decodes requests, enforces hello and auth, dispatches to the handler, encodes replies."""

    def __init__(
        self,
        handler: RecorderHandler,
        secret: bytes,
        *,
        min_version: int = MIN_PROTOCOL_VERSION,
        max_version: int = PROTOCOL_VERSION,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not secret:
            raise ValueError("the fleet secret must not be empty")
        self.handler = handler
        self._secret = bytes(secret)
        self._versions = (min_version, max_version)
        self._random = random_bytes
        self.decoder = FrameDecoder()
        self.stats = EndpointStats()
        self.version: int | None = None  # negotiated protocol version
        self.authenticated = False
        self._challenge: bytes | None = None

    def reset(self) -> None:
        """Power cycle / re-plug: forget the session and any partial frame."""
        self.version = None
        self.authenticated = False
        self._challenge = None
        self.decoder.reset()

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the line in; encoded reply frames out (one per complete request)."""
        out: list[bytes] = []
        for item in self.decoder.feed(data):
            if isinstance(item, Rejected):
                self.stats.requests += 1
                known = item.type_id in MESSAGE_TYPES
                code = ErrorCode.MALFORMED if known else ErrorCode.UNKNOWN_COMMAND
                reply: Message = self._error(code, str(item.error))
            else:
                reply = self.handle(item.message)
            out.append(encode_frame(item.request_id, reply))
        return out

    def handle(self, msg: Message) -> Message:
        """The reply to one decoded request."""
        self.stats.requests += 1
        if not msg.IS_REQUEST:
            return self._error(ErrorCode.UNKNOWN_COMMAND, f"{type(msg).__name__} is a reply")
        if isinstance(msg, HelloRequest):
            return self._hello(msg)
        if self.version is None:
            return self._error(ErrorCode.HELLO_REQUIRED, "send HelloRequest first")
        if isinstance(msg, AuthStart):
            self._challenge = self._random(AUTH_BYTES)
            return AuthChallenge(self._challenge)
        if isinstance(msg, AuthProve):
            return self._prove(msg)
        if not self.authenticated:
            return self._error(ErrorCode.AUTH_REQUIRED, "authenticate first")
        try:
            return self._dispatch(msg)
        except DeviceFault as fault:
            if fault.durable_offset is not None:
                self.stats.errors_sent += 1
                return FirmwareRefusal(fault.code, fault.durable_offset, _clip(fault.message, 255))
            return self._error(fault.code, fault.message)
        except BridgeError as exc:  # handler built an invalid value
            self.stats.handler_crashes += 1
            log.exception("recorder handler returned an invalid value")
            return self._error(ErrorCode.INTERNAL, f"invalid value: {exc}")
        except Exception as exc:
            self.stats.handler_crashes += 1
            log.exception("recorder handler failed")
            return self._error(ErrorCode.INTERNAL, type(exc).__name__)

    def _error(self, code: int, message: str) -> ErrorReply:
        self.stats.errors_sent += 1
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0xFFFF:
            message, code = f"bad fault code {code!r}: {message}", ErrorCode.INTERNAL
        return ErrorReply(code, _clip(message, 255))

    def _hello(self, msg: HelloRequest) -> Message:
        self.version = None
        self.authenticated = False
        self._challenge = None
        lo = max(msg.min_version, self._versions[0])
        hi = min(msg.max_version, self._versions[1])
        if lo > hi:
            return self._error(
                ErrorCode.UNSUPPORTED_VERSION,
                f"device speaks versions {self._versions[0]}..{self._versions[1]}",
            )
        self.version = hi
        try:
            model = _typed(self.handler.identity(), Identity).model
        except Exception:
            log.exception("recorder handler failed in identity() during hello")
            model = ""
        return Hello(hi, model, MAX_PAYLOAD, True)

    def _prove(self, msg: AuthProve) -> Message:
        challenge, self._challenge = self._challenge, None  # single use, right or wrong
        if challenge is None:
            return self._error(ErrorCode.NO_CHALLENGE, "send AuthStart first")
        expected = auth.host_proof(self._secret, challenge, msg.host_nonce)
        if not auth.proofs_equal(expected, msg.proof):
            self.authenticated = False
            self.stats.auth_failures += 1
            return self._error(ErrorCode.AUTH_FAILED, "wrong proof")
        self.authenticated = True
        return AuthAccepted(auth.device_proof(self._secret, challenge, msg.host_nonce))

    def _dispatch(self, msg: Message) -> Message:
        h = self.handler
        match msg:
            case GetIdentity():
                return _typed(h.identity(), Identity)
            case GetOfficer():
                return _typed(h.get_officer(), OfficerRecord)
            case SetOfficer(record=record):
                h.set_officer(record)
                return Ok()
            case GetClock():
                return ClockTime(h.get_clock())
            case SetClock(utc_ms=utc_ms):
                h.set_clock(utc_ms)
                return Ok()
            case GetBattery():
                return _typed(h.battery(), BatteryStatus)
            case GetStorage():
                return _typed(h.storage(), StorageStatus)
            case SetMassStorage(on=on):
                h.set_mass_storage(on)
                return Ok()
            case ListRecordings(offset=offset, limit=limit):
                page = _typed(h.list_recordings(offset, limit), RecordingPage)
                return RecordingPage(page.total, _fit(page.entries, limit))
            case DeleteRecording(name=name, size=size, blake3=digest):
                h.delete_recording(name, size, digest)
                return Ok()
            case GetEventLog(since_index=since, limit=limit):
                log_page = _typed(h.event_log(since, limit), EventLogPage)
                return EventLogPage(log_page.end_index, _fit(log_page.entries, limit))
        return self._dispatch_firmware(msg)

    def _dispatch_firmware(self, msg: Message) -> Message:
        h = self.handler
        match msg:
            case GetFirmwareStatus():
                return _typed(h.firmware_status(), FirmwareStatus)
            case FirmwareBeginRequest(manifest=manifest, signature=signature):
                return _typed(h.firmware_begin(manifest, signature), FirmwareBegin)
            case FirmwareChunk(offset=offset, crc32=crc, data=data):
                return FirmwareProgress(h.firmware_chunk(offset, crc, data))
            case FirmwareCommit():
                h.firmware_commit()
                return Ok()
            case Reboot():
                h.reboot()
                return Ok()
        return self._error(ErrorCode.UNKNOWN_COMMAND, type(msg).__name__)


def _typed(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind):
        raise TypeError(f"handler returned {type(value).__name__}, expected {kind.__name__}")
    return value


def _fit(entries: tuple[_E, ...], limit: int) -> tuple[_E, ...]:
    """Leading entries that respect ``limit`` and fit one frame's payload."""
    room = MAX_PAYLOAD - _PAGE_HEADER
    out: list[_E] = []
    for e in entries[:limit]:
        room -= e.wire_size
        if room < 0:
            break
        out.append(e)
    return tuple(out)


def _clip(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8", "replace").replace(b"\x00", b"?")[:max_bytes]
    return raw.decode("utf-8", "ignore")


# ---------------------------------------------------------------- I/O shell for a pty


@dataclass(slots=True)
class PtyPair:
    """A raw pty: the device serves ``master_fd``; the host opens ``slave_path``.

    ``slave_fd`` stays open so the master never reads EIO while no host has the port open.
    """

    master_fd: int
    slave_fd: int
    slave_path: str

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_pty() -> PtyPair:
    """A new pty in raw mode (no echo, no line editing), master non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return PtyPair(master, slave, os.ttyname(slave))


async def host_has_read(pty: PtyPair, limit_s: float = 5.0) -> None:
    """Wait (bounded) until the host has read what is on the line. Closing a pty discards
    what its reader has not taken yet, whereas a USB device's sent reply is never lost so;
    the kernel moves written bytes to the reader's queue a little later, and a device also
    takes a moment to go down, hence the short first pause."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.05)
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        try:
            raw = fcntl.ioctl(pty.slave_fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return
        if not struct.unpack("i", raw)[0]:
            return
        await asyncio.sleep(0.005)


ReplyFilter = Callable[[bytes], Awaitable[bytes | None]]
RequestFilter = Callable[[bytes], bytes]
Pacer = Callable[[int], Awaitable[None]]  # waits as long as n bytes take on the wire

_GONE = (errno.EIO, errno.ENXIO, errno.EBADF)


class DeviceServer:
    """Serves a DeviceEndpoint on a non-blocking fd (a pty master) from the event loop."""

    def __init__(
        self,
        fd: int,
        endpoint: DeviceEndpoint,
        *,
        reply_filter: ReplyFilter | None = None,
        request_filter: RequestFilter | None = None,
        handler_in_thread: bool = False,
        pace_in: Pacer | None = None,
        pace_out: Pacer | None = None,
        after_replies: Callable[[], None] | None = None,
    ) -> None:
        self.fd = fd
        # link speed: each direction's bytes wait as long as the wire would take
        self.pace_in = pace_in
        self.pace_out = pace_out
        self.after_replies = after_replies  # called once the replies to a read are written
        self.endpoint = endpoint
        self.reply_filter = reply_filter
        self.request_filter = request_filter
        # True: endpoint and handler run in a worker thread (one request at a time), so a
        # slow handler (hashing for a guarded delete) does not stall a loop it shares with
        # the host under test. The handler must then tolerate being called off the loop.
        self.handler_in_thread = handler_in_thread
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def run(self) -> None:
        """Serve until the fd reports EOF/EIO or aclose() is called."""
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self.fd, False)
        self._loop.add_reader(self.fd, self._on_readable)
        try:
            while True:
                data = await self._inbox.get()
                if data is None:
                    return
                if self.pace_in is not None:
                    await self.pace_in(len(data))
                if self.request_filter is not None:
                    data = self.request_filter(data)
                if self.handler_in_thread:
                    replies = await asyncio.to_thread(self.endpoint.feed, data)
                else:
                    replies = self.endpoint.feed(data)
                for frame in replies:
                    out: bytes | None = frame
                    if self.reply_filter is not None:
                        out = await self.reply_filter(frame)
                    if out:
                        if self.pace_out is not None:
                            await self.pace_out(len(out))
                        await self._write(out)
                if self.after_replies is not None:
                    self.after_replies()
        finally:
            self._detach()

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the line now (noise, a stray frame)."""
        if self._loop is None:
            raise RuntimeError("DeviceServer is not running")
        self._loop.create_task(self._write(data))

    async def aclose(self) -> None:
        """Stop serving (the fd stays open: closing it is the owner's "unplug")."""
        self._closed = True
        self._detach()
        self._inbox.put_nowait(None)
        await asyncio.sleep(0)

    def _detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.fd)
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in _GONE:
                log.warning("device fd read failed: %s", exc)
            data = b""
        if not data:
            self._detach()
            self._inbox.put_nowait(None)
            return
        self._inbox.put_nowait(data)

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view and not self._closed:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self.fd)
                continue
            except OSError as exc:
                if exc.errno in _GONE:
                    return
                raise
            view = view[n:]


async def serve_fd(
    fd: int,
    endpoint: DeviceEndpoint,
    *,
    reply_filter: ReplyFilter | None = None,
    request_filter: RequestFilter | None = None,
    handler_in_thread: bool = False,
) -> None:
    """Serve ``endpoint`` on ``fd`` until EOF/EIO (see DeviceServer for control)."""
    await DeviceServer(
        fd,
        endpoint,
        reply_filter=reply_filter,
        request_filter=request_filter,
        handler_in_thread=handler_in_thread,
    ).run()
