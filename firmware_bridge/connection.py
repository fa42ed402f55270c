"""Host side of the recorder protocol as a pure state machine (no I/O, no clock of its own).

The I/O shell (``client.RecorderClient``) asks it what to do next::

    step = conn.send(request, now)        # Transmit: write step.data, wait until step.deadline
    outcome = conn.receive_data(bytes)    # Answered(reply) / Failed(error) / None (not yet)
    step = conn.timed_out(now)            # no answer by the deadline: Transmit a retry or Failed
    conn.abandon()                        # the caller stopped waiting (cancelled)
    conn.connection_lost(reason)          # the port went away: Failed for what was outstanding

It owns request ids, the retry policy each request declares (``Request.POLICY``), matching
replies to the outstanding request, mapping error replies to exceptions, and the hello /
mutual authentication sequence. One request is outstanding at a time (recorders handle
commands serially); a late reply to an earlier attempt is recognised and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from firmware_bridge import auth
from firmware_bridge.codec import MAX_REQUEST_ID, DecoderStats, Frame, FrameDecoder, encode_frame
from firmware_bridge.errors import (
    AuthRefused,
    BridgeError,
    DeviceError,
    FirmwareRefused,
    LinkClosed,
    LinkTimeout,
    ProtocolError,
)
from firmware_bridge.messages import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    AuthAccepted,
    AuthChallenge,
    AuthProve,
    AuthStart,
    ErrorCode,
    ErrorReply,
    FirmwareBeginRequest,
    FirmwareChunk,
    FirmwareCommit,
    FirmwareRefusal,
    GetFirmwareStatus,
    Hello,
    HelloRequest,
    Reboot,
    Reply,
    Request,
)

_AUTH_CODES = (ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED, ErrorCode.NO_CHALLENGE)
# an ErrorReply to one of these is a FirmwareRefused (the update's own error type)
_FIRMWARE_REQUESTS = (GetFirmwareStatus, FirmwareBeginRequest, FirmwareChunk, FirmwareCommit,
                      Reboot)


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


@dataclass(frozen=True, slots=True)
class Transmit:
    """Write ``data`` now; call ``timed_out`` if nothing came by ``deadline``."""

    data: bytes
    deadline: float
    attempt: int  # 1 for the first send


@dataclass(frozen=True, slots=True)
class Answered:
    reply: Reply  # of the type the request declares


@dataclass(frozen=True, slots=True)
class Failed:
    error: BridgeError


Outcome = Answered | Failed


@dataclass(slots=True)
class _Outstanding:
    request: Request[Any]
    request_id: int
    attempt: int
    timeout: float


class ClientConnection:
    """See the module docstring. ``timeout`` is per attempt (raised to a request's declared
    minimum); idempotent requests are sent up to ``1 + retries`` times."""

    def __init__(self, *, timeout: float = 2.0, retries: int = 2) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.timeout = timeout
        self.retries = retries
        self._decoder = FrameDecoder()
        self.stats = ClientStats(decoder=self._decoder.stats)
        self.hello_info: Hello | None = None
        self._next_id = 1
        self._current: _Outstanding | None = None
        self._lost: LinkClosed | None = None
        self._expected_device_proof: bytes | None = None

    @property
    def closed(self) -> LinkClosed | None:
        return self._lost

    # --- requests ----------------------------------------------------------------------------
    def send(self, request: Request[Any], now: float) -> Transmit:
        """Start a request (the previous one must have its outcome)."""
        if self._lost is not None:
            raise self._lost
        if self._current is not None:
            raise RuntimeError("a request is already outstanding")
        timeout = max(self.timeout, request.POLICY.min_timeout_s)
        self._current = _Outstanding(request, 0, 0, timeout)
        return self._transmit(now)

    def timed_out(self, now: float) -> Transmit | Failed:
        """The deadline passed: send again if the request allows it, else give up."""
        cur = self._require()
        self.stats.timeouts += 1
        attempts = 1 + (self.retries if cur.request.POLICY.idempotent else 0)
        if cur.attempt < attempts:
            self.stats.retries += 1
            return self._transmit(now)
        self._current = None
        return Failed(LinkTimeout(
            f"{type(cur.request).__name__}: no reply within {cur.timeout:g}s after "
            f"{cur.attempt} attempt(s)"))

    def receive_data(self, data: bytes) -> Outcome | None:
        """Bytes from the line; the outcome of the outstanding request once it is known."""
        outcome: Outcome | None = None
        for item in self._decoder.feed(data):
            cur = self._current
            if cur is None or item.request_id != cur.request_id or outcome is not None:
                if isinstance(item, Frame):
                    self.stats.unexpected_replies += 1
                continue
            self._current = None
            if not isinstance(item, Frame):
                outcome = Failed(item.error)
            elif not isinstance(item.message, Reply):
                outcome = Failed(ProtocolError("device sent a request type as a reply"))
            else:
                outcome = self._judge(cur.request, item.message)
        return outcome

    def abandon(self) -> None:
        """The caller gave up waiting (cancelled): forget the request; a reply to it that
        still arrives is dropped as unexpected."""
        self._current = None

    def connection_lost(self, reason: str) -> Failed | None:
        """The line is gone: the outstanding request fails, and so will every later one."""
        if self._lost is None:
            self._lost = LinkClosed(f"recorder link lost: {reason}")
        cur, self._current = self._current, None
        return Failed(self._lost) if cur is not None else None

    def _require(self) -> _Outstanding:
        if self._current is None:
            raise RuntimeError("no request is outstanding")
        return self._current

    def _transmit(self, now: float) -> Transmit:
        cur = self._require()
        cur.request_id = self._new_id()
        cur.attempt += 1
        self.stats.requests += 1
        return Transmit(encode_frame(cur.request_id, cur.request), now + cur.timeout, cur.attempt)

    def _new_id(self) -> int:
        rid = self._next_id
        self._next_id = rid % MAX_REQUEST_ID + 1  # 1..65535, 0 never used
        return rid

    def _judge(self, request: Request[Any], reply: Reply) -> Outcome:
        if isinstance(reply, FirmwareRefusal):
            self.stats.error_replies += 1
            return Failed(FirmwareRefused(reply.code, reply.message, reply.durable_offset))
        if isinstance(reply, ErrorReply):
            self.stats.error_replies += 1
            return Failed(self._error(request, reply))
        if not isinstance(reply, type(request).REPLY):
            return Failed(ProtocolError(
                f"{type(request).__name__} answered with {type(reply).__name__}"))
        return Answered(reply)

    @staticmethod
    def _error(request: Request[Any], reply: ErrorReply) -> BridgeError:
        if reply.code in _AUTH_CODES:
            return AuthRefused(reply.message or ErrorCode(reply.code).name, reply.code)
        if isinstance(request, _FIRMWARE_REQUESTS):
            return FirmwareRefused(reply.code, reply.message)
        return DeviceError(reply.code, reply.message)

    # --- hello and mutual authentication ------------------------------------------------------
    @staticmethod
    def hello_request() -> HelloRequest:
        return HelloRequest(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)

    def hello_received(self, reply: Hello) -> Hello:
        """Check the version the device chose; a hello also ends any authentication."""
        self._expected_device_proof = None
        if not MIN_PROTOCOL_VERSION <= reply.protocol_version <= PROTOCOL_VERSION:
            raise ProtocolError(f"device chose unsupported version {reply.protocol_version}")
        self.hello_info = reply
        return reply

    @staticmethod
    def auth_start() -> AuthStart:
        return AuthStart()

    def auth_prove(self, challenge: AuthChallenge, secret: bytes, nonce: bytes) -> AuthProve:
        """The host's proof for this challenge; remembers what the device must answer."""
        self._expected_device_proof = auth.device_proof(secret, challenge.challenge, nonce)
        return AuthProve(nonce, auth.host_proof(secret, challenge.challenge, nonce))

    def auth_accepted(self, reply: AuthAccepted) -> None:
        """AuthRefused unless the device proved it knows the fleet secret."""
        expected, self._expected_device_proof = self._expected_device_proof, None
        if expected is None or not auth.proofs_equal(expected, reply.device_proof):
            raise AuthRefused("recorder failed to prove it knows the fleet secret")
