"""Every message of the recorder serial protocol, declared once (pure, no I/O).

Each message is a frozen dataclass whose fields say what they are on the wire
(``name: Annotated[type, FieldKind]``, see ``fields``); encoding, decoding and validation
come from those declarations, and the ``@request`` / ``@reply`` decorators register the
type id, a request's reply type and its retry policy. Construction validates every field,
so a value that would not fit on the wire cannot exist (FieldError, also a ValueError).
Framing (COBS, CRC, request ids) lives in ``codec``; the format is in docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Self, TypeAlias, TypeVar

from firmware_bridge.errors import FieldError, PayloadError
from firmware_bridge.fields import (
    Blob,
    Coded,
    Entries,
    FieldKind,
    FixedText,
    Flag,
    Letter,
    Nested,
    Raw,
    Tenths,
    Text,
    UInt,
)
from firmware_bridge.wire import Reader, Writer

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
MAX_PAYLOAD = 4096  # bytes of message payload in one frame (both directions)

# Field widths (bytes of UTF-8), as in the recorder vendors' SDK records.
SERIAL_WIDTH = 8
OFFICER_NO_WIDTH = 7
OFFICER_NAME_WIDTH = 33
UNIT_NO_WIDTH = 13
UNIT_NAME_WIDTH = 33
SHORT_TEXT_MAX = 64  # model, hardware revision, firmware version
ERROR_TEXT_MAX = 255
DETAIL_MAX = 512
NAME_MAX = 1024  # recording name bytes
AUTH_BYTES = 32  # challenge, nonce and HMAC-SHA256 sizes
DIGEST_BYTES = 32  # BLAKE3 digest
SIGNATURE_BYTES = 64  # Ed25519
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
TIME_MAX = 2**63 - 1  # ms since the Unix epoch, UTC
FIRMWARE_CHUNK_MAX = 4064  # largest chunk data a recorder may ask for (fits MAX_PAYLOAD)
MANIFEST_WIRE_MAX = MAX_PAYLOAD - 2 - SIGNATURE_BYTES  # manifest bytes in one FirmwareBegin
SLOTS = "AB"


class ErrorCode(enum.IntEnum):
    """Codes carried by ErrorReply. Unknown codes from a newer device stay plain ints."""

    MALFORMED = 0x0001  # payload could not be decoded
    UNKNOWN_COMMAND = 0x0002
    UNSUPPORTED_VERSION = 0x0003
    HELLO_REQUIRED = 0x0004  # no version negotiated yet
    AUTH_REQUIRED = 0x0005
    AUTH_FAILED = 0x0006  # wrong proof (the challenge is spent)
    NO_CHALLENGE = 0x0007  # AuthProve without a fresh AuthStart
    INVALID_ARGUMENT = 0x0010
    NOT_FOUND = 0x0011
    MISMATCH = 0x0012  # guarded delete: size or hash differs
    BUSY = 0x0013  # e.g. recording in progress, mass storage active
    STORAGE_FAULT = 0x0014
    HARDWARE_FAULT = 0x0015
    FIRMWARE_SIGNATURE = 0x0020  # unknown signing key or a signature that does not verify
    FIRMWARE_MODEL = 0x0021  # the package is not for this recorder's model
    FIRMWARE_VERSION = 0x0022  # running version outside the package's min_from..max_from
    FIRMWARE_HASH = 0x0023  # the staged image's BLAKE3 differs from the manifest's
    FIRMWARE_OFFSET = 0x0024  # chunk offset is not where the recorder can continue
    FIRMWARE_NO_TRANSFER = 0x0025  # chunk or commit without a begun transfer
    FIRMWARE_CRC = 0x0026  # a chunk's CRC-32 does not match its data
    FIRMWARE_MANIFEST = 0x0027  # the manifest is malformed or too large for the slot
    FIRMWARE_INCOMPLETE = 0x0028  # commit before the whole image is durably received
    INTERNAL = 0x00FF


class FirmwareResult(enum.IntEnum):
    """Outcome of the last firmware update the recorder tried to boot."""

    NONE = 0
    OK = 1
    ROLLED_BACK = 2  # the new image did not boot; the previous slot runs
    SELF_TEST_FAILED = 3  # the new image booted but failed its self-test; rolled back


class LogKind(enum.IntEnum):
    """Kinds of device event-log entries. Unknown kinds from a newer device stay plain ints."""

    POWER_ON = 1
    POWER_OFF = 2
    RECORDING_START = 3
    RECORDING_STOP = 4
    LOW_BATTERY = 5
    STORAGE_FULL = 6
    STORAGE_FAULT = 7
    HARDWARE_FAULT = 8
    CLOCK_SET = 9
    OFFICER_ASSIGNED = 10
    MASS_STORAGE_ON = 11
    MASS_STORAGE_OFF = 12
    FILE_DELETED = 13
    AUTH_FAILURE = 14


def check_recording_name(name: bytes) -> None:
    """A recording name: relative, '/'-separated, no NUL, no empty/'.'/'..' components."""
    if not isinstance(name, bytes):
        raise FieldError("recording name must be bytes")
    if not 1 <= len(name) <= NAME_MAX:
        raise FieldError(f"recording name must be 1..{NAME_MAX} bytes, got {len(name)}")
    if b"\x00" in name:
        raise FieldError("recording name must not contain NUL")
    for part in name.split(b"/"):
        if part in (b"", b".", b".."):
            raise FieldError(f"recording name {name!r} is not a plain relative path")


# Field types: the Python type and its wire form, named once.
U8: TypeAlias = Annotated[int, UInt(1)]
U16: TypeAlias = Annotated[int, UInt(2)]
U32: TypeAlias = Annotated[int, UInt(4)]
U64: TypeAlias = Annotated[int, UInt(8)]
Limit: TypeAlias = Annotated[int, UInt(2, lo=1)]
ProtocolVersion: TypeAlias = Annotated[int, UInt(1, lo=1)]
TimeMs: TypeAlias = Annotated[int, UInt(8, hi=TIME_MAX)]
Percent: TypeAlias = Annotated[int, UInt(1, hi=100)]
Bool: TypeAlias = Annotated[bool, Flag()]
ShortText: TypeAlias = Annotated[str, Text(SHORT_TEXT_MAX)]
ErrorText: TypeAlias = Annotated[str, Text(ERROR_TEXT_MAX)]
AuthBytes: TypeAlias = Annotated[bytes, Raw(AUTH_BYTES)]
Digest: TypeAlias = Annotated[bytes, Raw(DIGEST_BYTES)]
RecordingName: TypeAlias = Annotated[bytes, Blob(1, NAME_MAX, check_recording_name)]
Code: TypeAlias = Annotated[int, Coded(2, codes=ErrorCode)]


class Record:
    """Base of everything with declared wire fields (messages and their entries)."""

    __slots__ = ()
    WIRE_FIELDS: ClassVar[tuple[tuple[str, FieldKind[Any]], ...]] = ()

    def __post_init__(self) -> None:
        for name, kind in self.WIRE_FIELDS:
            value = getattr(self, name)
            checked = kind.check(name, value)
            if checked is not value:  # normalised (a known code becomes its enum member)
                object.__setattr__(self, name, checked)
        self._check()

    def _check(self) -> None:
        """Rules across fields (the fields themselves are checked already)."""

    def write_fields(self, w: Writer) -> None:
        for name, kind in self.WIRE_FIELDS:
            kind.write(w, name, getattr(self, name))

    @classmethod
    def read_fields(cls, r: Reader) -> Self:
        return cls(*(kind.read(r, name) for name, kind in cls.WIRE_FIELDS))

    def encode_payload(self) -> bytes:
        w = Writer()
        self.write_fields(w)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        r = Reader(data)
        record = cls.read_fields(r)
        r.end()
        return record

    @classmethod
    def spelling(cls) -> str:
        """The payload as docs/protocol.md writes it ("offset u32, limit u16")."""
        return ", ".join(kind.spelling(name) for name, kind in cls.WIRE_FIELDS)

    @property
    def wire_size(self) -> int:
        return len(self.encode_payload())


class Message(Record):
    """A record with a wire type id."""

    __slots__ = ()
    TYPE_ID: ClassVar[int]
    IS_REQUEST: ClassVar[bool] = False


class Reply(Message):
    __slots__ = ()


_R = TypeVar("_R", bound=Reply)


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """How the host sends a request; why each is or is not idempotent is in
    docs/protocol.md ("Timeouts and retries")."""

    idempotent: bool  # safe to send again when the reply may have been lost
    min_timeout_s: float = 0.0  # floor under the client's timeout for slow commands


class Request(Message, Generic[_R]):
    """A host -> device message; ``REPLY`` is what a success is answered with (ErrorReply
    is always possible too), ``COMMAND`` its short name (fault injection, logs)."""

    __slots__ = ()
    IS_REQUEST: ClassVar[bool] = True
    REPLY: ClassVar[type[Reply]]
    POLICY: ClassVar[CommandPolicy]
    COMMAND: ClassVar[str]


MESSAGE_TYPES: dict[int, type[Message]] = {}  # filled by @request / @reply, in declaration order
_C = TypeVar("_C", bound=type[Record])


def record(cls: _C) -> _C:
    """Read the wire kinds of a dataclass's fields from their annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    declared: list[tuple[str, FieldKind[Any]]] = []
    data_class: type = cls
    if not dataclasses.is_dataclass(data_class):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    for f in dataclasses.fields(data_class):
        kinds = [k for k in getattr(hints[f.name], "__metadata__", ()) if isinstance(k, FieldKind)]
        if len(kinds) != 1:
            raise TypeError(f"{cls.__name__}.{f.name}: declare exactly one wire field kind")
        declared.append((f.name, kinds[0]))
    cls.WIRE_FIELDS = tuple(declared)
    return cls


def _register(cls: type[Message], type_id: int) -> None:
    if type_id in MESSAGE_TYPES:
        raise TypeError(f"type id {type_id:#04x} of {cls.__name__} is taken")
    if not 0 <= type_id <= 0xFF or (type_id < 0x80) != cls.IS_REQUEST:
        raise TypeError(f"{cls.__name__}: requests use ids below 0x80, replies 0x80 and up")
    cls.TYPE_ID = type_id
    MESSAGE_TYPES[type_id] = cls


def reply(type_id: int) -> Callable[[_C], _C]:
    def declare(cls: _C) -> _C:
        assert issubclass(cls, Reply)
        record(cls)
        _register(cls, type_id)
        return cls
    return declare


def request(type_id: int, answer: type[Reply], command: str, *, idempotent: bool,
            min_timeout_s: float = 0.0) -> Callable[[_C], _C]:
    def declare(cls: _C) -> _C:
        assert issubclass(cls, Request)
        record(cls)
        _register(cls, type_id)
        cls.REPLY = answer
        cls.COMMAND = command
        cls.POLICY = CommandPolicy(idempotent, min_timeout_s)
        return cls
    return declare


# ---------------------------------------------------------------- replies (device -> host)


@reply(0x80)
@dataclass(frozen=True, slots=True)
class Ok(Reply):
    """Success reply to a command that returns nothing."""


@reply(0x81)
@dataclass(frozen=True, slots=True)
class Hello(Reply):
    """Reply to HelloRequest: the version chosen and what the device is."""

    protocol_version: ProtocolVersion
    model: ShortText
    max_payload: Annotated[int, UInt(2, lo=256)] = MAX_PAYLOAD
    auth_required: Bool = True


@reply(0x82)
@dataclass(frozen=True, slots=True)
class AuthChallenge(Reply):
    challenge: AuthBytes


@reply(0x83)
@dataclass(frozen=True, slots=True)
class AuthAccepted(Reply):
    """The host's proof was right; the device proves in turn that it knows the secret."""

    device_proof: AuthBytes


@reply(0x90)
@dataclass(frozen=True, slots=True)
class Identity(Reply):
    serial: Annotated[str, FixedText(SERIAL_WIDTH)]
    model: ShortText
    hardware_rev: ShortText
    firmware: ShortText  # the running version


@reply(0x91)
@dataclass(frozen=True, slots=True)
class OfficerRecord(Reply):
    """The officer assignment record (fixed-width UTF-8 fields; empty = unassigned).

    The reply to GetOfficer, and the payload of SetOfficer.
    """

    officer_no: Annotated[str, FixedText(OFFICER_NO_WIDTH)]
    officer_name: Annotated[str, FixedText(OFFICER_NAME_WIDTH)]
    unit_no: Annotated[str, FixedText(UNIT_NO_WIDTH)]
    unit_name: Annotated[str, FixedText(UNIT_NAME_WIDTH)]


@reply(0x93)
@dataclass(frozen=True, slots=True)
class ClockTime(Reply):
    """Reply to GetClock: the device's UTC clock in ms since the Unix epoch."""

    utc_ms: TimeMs


@reply(0x95)
@dataclass(frozen=True, slots=True)
class BatteryStatus(Reply):
    """Battery state. Temperature travels in tenths of a degree, so it is rounded to 0.1."""

    percent: Percent
    millivolts: U16
    charging: Bool
    temperature_c: Annotated[float, Tenths()]
    cycle_count: U32
    health_percent: Percent


@reply(0x96)
@dataclass(frozen=True, slots=True)
class StorageStatus(Reply):
    total_bytes: U64
    free_bytes: U64
    file_count: U32
    recording: Bool


@record
@dataclass(frozen=True, slots=True)
class RecordingInfo(Record):
    """One file on the recorder. ``name`` is raw bytes relative to the storage root."""

    name: RecordingName
    size: U64
    start_ms: TimeMs
    end_ms: TimeMs


@reply(0x98)
@dataclass(frozen=True, slots=True)
class RecordingPage(Reply):
    """Reply to ListRecordings: ``total`` files on the device, and the page's entries."""

    total: U32
    entries: Annotated[tuple[RecordingInfo, ...], Entries(RecordingInfo)]


@record
@dataclass(frozen=True, slots=True)
class DeviceLogEvent(Record):
    """One device event-log entry; ``kind`` is a LogKind, or a plain int if unknown."""

    index: U32
    time_ms: TimeMs
    kind: Annotated[int, Coded(2, codes=LogKind)]
    detail: Annotated[str, Text(DETAIL_MAX, wide=True)]


@reply(0x9A)
@dataclass(frozen=True, slots=True)
class EventLogPage(Reply):
    """Reply to GetEventLog; ``end_index`` is one past the newest entry on the device."""

    end_index: U32
    entries: Annotated[tuple[DeviceLogEvent, ...], Entries(DeviceLogEvent)]


@reply(0x9B)
@dataclass(frozen=True, slots=True)
class FirmwareStatus(Reply):
    """Reply to GetFirmwareStatus: slots, the last update's result and the staged transfer."""

    running_version: ShortText
    active_slot: Annotated[str, Letter(SLOTS)]
    slot_a_version: ShortText  # "" = empty slot
    slot_b_version: ShortText
    last_result: Annotated[int, Coded(1, codes=FirmwareResult)]
    staged_blake3: Digest  # zeros: nothing staged
    staged_offset: U64  # durable
    staged_size: U64

    def _check(self) -> None:
        if self.staged_offset > self.staged_size:
            raise FieldError("staged_offset > staged_size")


@reply(0x9C)
@dataclass(frozen=True, slots=True)
class FirmwareBegin(Reply):
    """Reply to FirmwareBeginRequest: where to continue (the durable offset; 0 for a new
    image) and the largest chunk the recorder takes."""

    offset: U64
    chunk_max: Annotated[int, UInt(4, lo=1, hi=FIRMWARE_CHUNK_MAX)]


@reply(0x9D)
@dataclass(frozen=True, slots=True)
class FirmwareProgress(Reply):
    """Reply to FirmwareChunk: the recorder's durable offset (it may lag the bytes sent)."""

    durable_offset: U64


@reply(0x9E)
@dataclass(frozen=True, slots=True)
class FirmwareRefusal(Reply):
    """A firmware step was refused; carries the recorder's durable offset to resume from."""

    code: Code
    durable_offset: U64
    message: ErrorText = ""


@reply(0xFF)
@dataclass(frozen=True, slots=True)
class ErrorReply(Reply):
    """A command failed; ``code`` is an ErrorCode, or a plain int if unknown."""

    code: Code
    message: ErrorText = ""


# ---------------------------------------------------------------- requests (host -> device)


@request(0x01, Hello, "hello", idempotent=True)
@dataclass(frozen=True, slots=True)
class HelloRequest(Request[Hello]):
    """Open a session and negotiate the protocol version (highest common one wins)."""

    min_version: ProtocolVersion = MIN_PROTOCOL_VERSION
    max_version: ProtocolVersion = PROTOCOL_VERSION

    def _check(self) -> None:
        if self.min_version > self.max_version:
            raise FieldError("min_version > max_version")


@request(0x02, AuthChallenge, "auth", idempotent=True)
@dataclass(frozen=True, slots=True)
class AuthStart(Request[AuthChallenge]):
    """Ask for a fresh random challenge (it replaces any earlier one)."""


@request(0x03, AuthAccepted, "auth", idempotent=False)  # the challenge is single-use
@dataclass(frozen=True, slots=True)
class AuthProve(Request[AuthAccepted]):
    """Host proof: HMAC-SHA256 over the challenge and the host's own nonce (see auth.py)."""

    host_nonce: AuthBytes
    proof: AuthBytes


@request(0x10, Identity, "identity", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetIdentity(Request[Identity]):
    pass


@request(0x11, OfficerRecord, "get_officer", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetOfficer(Request[OfficerRecord]):
    pass


@request(0x12, Ok, "set_officer", idempotent=True)
@dataclass(frozen=True, slots=True)
class SetOfficer(Request[Ok]):
    record: Annotated[OfficerRecord, Nested(OfficerRecord)]


@request(0x13, ClockTime, "get_clock", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetClock(Request[ClockTime]):
    pass


@request(0x14, Ok, "set_clock", idempotent=False)  # a late re-send would set a stale time
@dataclass(frozen=True, slots=True)
class SetClock(Request[Ok]):
    utc_ms: TimeMs


@request(0x15, BatteryStatus, "battery", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetBattery(Request[BatteryStatus]):
    pass


@request(0x16, StorageStatus, "storage", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetStorage(Request[StorageStatus]):
    pass


@request(0x17, Ok, "mass_storage", idempotent=True, min_timeout_s=10.0)  # re-enumerates
@dataclass(frozen=True, slots=True)
class SetMassStorage(Request[Ok]):
    """Expose (on) or hide (off) the recorder's storage as a USB mass-storage device."""

    on: Bool


@request(0x18, RecordingPage, "list_recordings", idempotent=True)
@dataclass(frozen=True, slots=True)
class ListRecordings(Request[RecordingPage]):
    """One page of the recording list, from ``offset`` (0-based), at most ``limit`` entries."""

    offset: U32
    limit: Limit


@request(0x19, Ok, "delete_recording", idempotent=False, min_timeout_s=120.0)  # hashes the file
@dataclass(frozen=True, slots=True)
class DeleteRecording(Request[Ok]):
    """Guarded delete: the recorder deletes ``name`` only if size and BLAKE3 digest match."""

    name: RecordingName
    size: U64
    blake3: Digest


@request(0x1A, EventLogPage, "event_log", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetEventLog(Request[EventLogPage]):
    """Event-log entries with index >= ``since_index``, at most ``limit`` of them."""

    since_index: U32
    limit: Limit


@request(0x1B, FirmwareStatus, "firmware_status", idempotent=True)
@dataclass(frozen=True, slots=True)
class GetFirmwareStatus(Request[FirmwareStatus]):
    pass


@request(0x1C, FirmwareBegin, "firmware_begin", idempotent=True, min_timeout_s=10.0)
@dataclass(frozen=True, slots=True)
class FirmwareBeginRequest(Request[FirmwareBegin]):
    """Start (or resume) staging an image: the signed manifest and its signature. The same
    manifest again gets the same durable offset, so a re-send is harmless."""

    manifest: Annotated[bytes, Blob(1, MANIFEST_WIRE_MAX)]
    signature: Annotated[bytes, Raw(SIGNATURE_BYTES)]


# The recorder takes a chunk again anywhere between its durable and received offsets.
@request(0x1D, FirmwareProgress, "firmware_chunk", idempotent=True, min_timeout_s=10.0)
@dataclass(frozen=True, slots=True)
class FirmwareChunk(Request[FirmwareProgress]):
    """Image bytes at ``offset``; ``crc32`` (zlib) over ``data``, checked by the recorder."""

    offset: U64
    crc32: U32
    data: Annotated[bytes, Blob(1, FIRMWARE_CHUNK_MAX)]


@request(0x1E, Ok, "firmware_commit", idempotent=False, min_timeout_s=120.0)  # hashes, copies
@dataclass(frozen=True, slots=True)
class FirmwareCommit(Request[Ok]):
    """Verify the staged image (hash and signature) and make it the next boot's slot."""


@request(0x1F, Ok, "reboot", idempotent=False)
@dataclass(frozen=True, slots=True)
class Reboot(Request[Ok]):
    """Reboot after the reply; the recorder leaves the bus and comes back."""


REQUEST_TYPES: tuple[type[Request[Any]], ...] = tuple(
    t for t in MESSAGE_TYPES.values() if issubclass(t, Request))
REPLY_TYPES: tuple[type[Reply], ...] = tuple(
    t for t in MESSAGE_TYPES.values() if issubclass(t, Reply))
COMMANDS: frozenset[str] = frozenset(t.COMMAND for t in REQUEST_TYPES)
OFFICER_FIELD_WIDTHS: dict[str, int] = {  # what an officer record's fields hold, in bytes
    name: kind.width for name, kind in OfficerRecord.WIRE_FIELDS if isinstance(kind, FixedText)}


def decode_message(type_id: int, payload: bytes) -> Message:
    """Decode one payload of the given type; PayloadError/FieldError if it is not valid."""
    cls = MESSAGE_TYPES.get(type_id)
    if cls is None:
        raise PayloadError(f"unknown message type {type_id:#04x}")
    return cls.decode_payload(payload)
