"""Every message of the recorder serial protocol, as frozen dataclasses (pure, no I/O).

Each class carries its wire ``TYPE_ID`` and knows its own payload encoding; construction
validates every field, so a value that would not fit on the wire cannot exist (FieldError,
also a ValueError). Framing (COBS, CRC, request ids) lives in ``codec``. The wire format is
documented in docs/protocol.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias

from firmware_bridge.errors import FieldError, PayloadError
from firmware_bridge.wire import Reader, Writer, check_int, utf8

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
U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
TIME_MAX = 2**63 - 1  # ms since the Unix epoch, UTC
SIGNATURE_BYTES = 64  # Ed25519
FIRMWARE_CHUNK_OVERHEAD = 14  # offset u64, crc32 u32, data length u16
FIRMWARE_CHUNK_MAX = 4064  # largest chunk data a recorder may ask for (fits MAX_PAYLOAD)
MANIFEST_WIRE_MAX = MAX_PAYLOAD - 2 - SIGNATURE_BYTES  # manifest bytes in one FirmwareBegin
SLOTS = ("A", "B")


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


def _code(value: int) -> int:
    try:
        return ErrorCode(value)
    except ValueError:
        return value


def _result(value: int) -> int:
    try:
        return FirmwareResult(value)
    except ValueError:
        return value


def _kind(value: int) -> int:
    try:
        return LogKind(value)
    except ValueError:
        return value


def _check_bytes(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise FieldError(f"{name} must be exactly {size} bytes")


def _check_time(name: str, value: int) -> None:
    check_int(name, value, 0, TIME_MAX)


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


class Message:
    """Base of all messages: a wire type id and a payload codec."""

    __slots__ = ()
    TYPE_ID: ClassVar[int]
    IS_REQUEST: ClassVar[bool]

    def encode_payload(self) -> bytes:
        w = Writer()
        self._write(w)
        return w.getvalue()

    @classmethod
    def decode_payload(cls, data: bytes) -> Self:
        r = Reader(data)
        msg = cls._read(r)
        r.end()
        return msg

    def _write(self, w: Writer) -> None:
        """Fields-less messages write nothing."""

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls()


# ---------------------------------------------------------------- requests (host -> device)


@dataclass(frozen=True, slots=True)
class HelloRequest(Message):
    """Open a session and negotiate the protocol version (highest common one wins)."""

    TYPE_ID: ClassVar[int] = 0x01
    IS_REQUEST: ClassVar[bool] = True
    min_version: int = MIN_PROTOCOL_VERSION
    max_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        check_int("min_version", self.min_version, 1, 0xFF)
        check_int("max_version", self.max_version, 1, 0xFF)
        if self.min_version > self.max_version:
            raise FieldError("min_version > max_version")

    def _write(self, w: Writer) -> None:
        w.u8(self.min_version)
        w.u8(self.max_version)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), r.u8())


@dataclass(frozen=True, slots=True)
class AuthStart(Message):
    """Ask for a fresh random challenge."""

    TYPE_ID: ClassVar[int] = 0x02
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AuthProve(Message):
    """Host proof: HMAC-SHA256 over the challenge and the host's own nonce (see auth.py)."""

    TYPE_ID: ClassVar[int] = 0x03
    IS_REQUEST: ClassVar[bool] = True
    host_nonce: bytes
    proof: bytes

    def __post_init__(self) -> None:
        _check_bytes("host_nonce", self.host_nonce, AUTH_BYTES)
        _check_bytes("proof", self.proof, AUTH_BYTES)

    def _write(self, w: Writer) -> None:
        w.raw(self.host_nonce)
        w.raw(self.proof)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.raw(AUTH_BYTES), r.raw(AUTH_BYTES))


@dataclass(frozen=True, slots=True)
class GetIdentity(Message):
    TYPE_ID: ClassVar[int] = 0x10
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class GetOfficer(Message):
    TYPE_ID: ClassVar[int] = 0x11
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class OfficerRecord(Message):
    """The officer assignment record (fixed-width UTF-8 fields; empty = unassigned).

    Also the reply to GetOfficer.
    """

    TYPE_ID: ClassVar[int] = 0x91
    IS_REQUEST: ClassVar[bool] = False
    officer_no: str
    officer_name: str
    unit_no: str
    unit_name: str

    def __post_init__(self) -> None:
        utf8("officer_no", self.officer_no, OFFICER_NO_WIDTH)
        utf8("officer_name", self.officer_name, OFFICER_NAME_WIDTH)
        utf8("unit_no", self.unit_no, UNIT_NO_WIDTH)
        utf8("unit_name", self.unit_name, UNIT_NAME_WIDTH)

    def _write(self, w: Writer) -> None:
        w.fixed_str("officer_no", self.officer_no, OFFICER_NO_WIDTH)
        w.fixed_str("officer_name", self.officer_name, OFFICER_NAME_WIDTH)
        w.fixed_str("unit_no", self.unit_no, UNIT_NO_WIDTH)
        w.fixed_str("unit_name", self.unit_name, UNIT_NAME_WIDTH)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(
            r.fixed_str("officer_no", OFFICER_NO_WIDTH),
            r.fixed_str("officer_name", OFFICER_NAME_WIDTH),
            r.fixed_str("unit_no", UNIT_NO_WIDTH),
            r.fixed_str("unit_name", UNIT_NAME_WIDTH),
        )


@dataclass(frozen=True, slots=True)
class SetOfficer(Message):
    TYPE_ID: ClassVar[int] = 0x12
    IS_REQUEST: ClassVar[bool] = True
    record: OfficerRecord

    def __post_init__(self) -> None:
        if not isinstance(self.record, OfficerRecord):
            raise FieldError("record must be an OfficerRecord")

    def _write(self, w: Writer) -> None:
        self.record._write(w)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(OfficerRecord._read(r))


@dataclass(frozen=True, slots=True)
class GetClock(Message):
    TYPE_ID: ClassVar[int] = 0x13
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SetClock(Message):
    TYPE_ID: ClassVar[int] = 0x14
    IS_REQUEST: ClassVar[bool] = True
    utc_ms: int

    def __post_init__(self) -> None:
        _check_time("utc_ms", self.utc_ms)

    def _write(self, w: Writer) -> None:
        w.u64(self.utc_ms)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64())


@dataclass(frozen=True, slots=True)
class GetBattery(Message):
    TYPE_ID: ClassVar[int] = 0x15
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class GetStorage(Message):
    TYPE_ID: ClassVar[int] = 0x16
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SetMassStorage(Message):
    """Expose (on) or hide (off) the recorder's storage as a USB mass-storage device."""

    TYPE_ID: ClassVar[int] = 0x17
    IS_REQUEST: ClassVar[bool] = True
    on: bool

    def __post_init__(self) -> None:
        if not isinstance(self.on, bool):
            raise FieldError("on must be a bool")

    def _write(self, w: Writer) -> None:
        w.boolean(self.on)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.boolean())


@dataclass(frozen=True, slots=True)
class ListRecordings(Message):
    """One page of the recording list, from ``offset`` (0-based), at most ``limit`` entries."""

    TYPE_ID: ClassVar[int] = 0x18
    IS_REQUEST: ClassVar[bool] = True
    offset: int
    limit: int

    def __post_init__(self) -> None:
        check_int("offset", self.offset, 0, U32_MAX)
        check_int("limit", self.limit, 1, 0xFFFF)

    def _write(self, w: Writer) -> None:
        w.u32(self.offset)
        w.u16(self.limit)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u32(), r.u16())


@dataclass(frozen=True, slots=True)
class DeleteRecording(Message):
    """Guarded delete: the recorder deletes ``name`` only if size and BLAKE3 digest match."""

    TYPE_ID: ClassVar[int] = 0x19
    IS_REQUEST: ClassVar[bool] = True
    name: bytes
    size: int
    blake3: bytes

    def __post_init__(self) -> None:
        check_recording_name(self.name)
        check_int("size", self.size, 0, U64_MAX)
        _check_bytes("blake3", self.blake3, DIGEST_BYTES)

    def _write(self, w: Writer) -> None:
        w.bytes16(self.name)
        w.u64(self.size)
        w.raw(self.blake3)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.bytes16(), r.u64(), r.raw(DIGEST_BYTES))


@dataclass(frozen=True, slots=True)
class GetEventLog(Message):
    """Event-log entries with index >= ``since_index``, at most ``limit`` of them."""

    TYPE_ID: ClassVar[int] = 0x1A
    IS_REQUEST: ClassVar[bool] = True
    since_index: int
    limit: int

    def __post_init__(self) -> None:
        check_int("since_index", self.since_index, 0, U32_MAX)
        check_int("limit", self.limit, 1, 0xFFFF)

    def _write(self, w: Writer) -> None:
        w.u32(self.since_index)
        w.u16(self.limit)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u32(), r.u16())


@dataclass(frozen=True, slots=True)
class GetFirmwareStatus(Message):
    TYPE_ID: ClassVar[int] = 0x1B
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class FirmwareBeginRequest(Message):
    """Start (or resume) staging an image: the signed manifest and its signature."""

    TYPE_ID: ClassVar[int] = 0x1C
    IS_REQUEST: ClassVar[bool] = True
    manifest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.manifest, bytes) or not 1 <= len(self.manifest) <= MANIFEST_WIRE_MAX:
            raise FieldError(f"manifest must be 1..{MANIFEST_WIRE_MAX} bytes")
        _check_bytes("signature", self.signature, SIGNATURE_BYTES)

    def _write(self, w: Writer) -> None:
        w.bytes16(self.manifest)
        w.raw(self.signature)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.bytes16(), r.raw(SIGNATURE_BYTES))


@dataclass(frozen=True, slots=True)
class FirmwareChunk(Message):
    """Image bytes at ``offset``; ``crc32`` (zlib) over ``data``, checked by the recorder."""

    TYPE_ID: ClassVar[int] = 0x1D
    IS_REQUEST: ClassVar[bool] = True
    offset: int
    crc32: int
    data: bytes

    def __post_init__(self) -> None:
        check_int("offset", self.offset, 0, U64_MAX)
        check_int("crc32", self.crc32, 0, U32_MAX)
        if not isinstance(self.data, bytes) or not 1 <= len(self.data) <= FIRMWARE_CHUNK_MAX:
            raise FieldError(f"chunk data must be 1..{FIRMWARE_CHUNK_MAX} bytes")

    def _write(self, w: Writer) -> None:
        w.u64(self.offset)
        w.u32(self.crc32)
        w.bytes16(self.data)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64(), r.u32(), r.bytes16())


@dataclass(frozen=True, slots=True)
class FirmwareCommit(Message):
    """Verify the staged image (hash and signature) and make it the next boot's slot."""

    TYPE_ID: ClassVar[int] = 0x1E
    IS_REQUEST: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Reboot(Message):
    """Reboot after the reply; the recorder leaves the bus and comes back."""

    TYPE_ID: ClassVar[int] = 0x1F
    IS_REQUEST: ClassVar[bool] = True


# ---------------------------------------------------------------- replies (device -> host)


@dataclass(frozen=True, slots=True)
class Ok(Message):
    """Success reply to a command that returns nothing."""

    TYPE_ID: ClassVar[int] = 0x80
    IS_REQUEST: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Reply to HelloRequest: the version chosen and what the device is."""

    TYPE_ID: ClassVar[int] = 0x81
    IS_REQUEST: ClassVar[bool] = False
    protocol_version: int
    model: str
    max_payload: int = MAX_PAYLOAD
    auth_required: bool = True

    def __post_init__(self) -> None:
        check_int("protocol_version", self.protocol_version, 1, 0xFF)
        utf8("model", self.model, SHORT_TEXT_MAX)
        check_int("max_payload", self.max_payload, 256, 0xFFFF)
        if not isinstance(self.auth_required, bool):
            raise FieldError("auth_required must be a bool")

    def _write(self, w: Writer) -> None:
        w.u8(self.protocol_version)
        w.str8("model", self.model, SHORT_TEXT_MAX)
        w.u16(self.max_payload)
        w.boolean(self.auth_required)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), r.str8("model"), r.u16(), r.boolean())


@dataclass(frozen=True, slots=True)
class AuthChallenge(Message):
    TYPE_ID: ClassVar[int] = 0x82
    IS_REQUEST: ClassVar[bool] = False
    challenge: bytes

    def __post_init__(self) -> None:
        _check_bytes("challenge", self.challenge, AUTH_BYTES)

    def _write(self, w: Writer) -> None:
        w.raw(self.challenge)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.raw(AUTH_BYTES))


@dataclass(frozen=True, slots=True)
class AuthAccepted(Message):
    """The host's proof was right; the device proves in turn that it knows the secret."""

    TYPE_ID: ClassVar[int] = 0x83
    IS_REQUEST: ClassVar[bool] = False
    device_proof: bytes

    def __post_init__(self) -> None:
        _check_bytes("device_proof", self.device_proof, AUTH_BYTES)

    def _write(self, w: Writer) -> None:
        w.raw(self.device_proof)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.raw(AUTH_BYTES))


@dataclass(frozen=True, slots=True)
class Identity(Message):
    TYPE_ID: ClassVar[int] = 0x90
    IS_REQUEST: ClassVar[bool] = False
    serial: str
    model: str
    hardware_rev: str
    firmware: str

    def __post_init__(self) -> None:
        utf8("serial", self.serial, SERIAL_WIDTH)
        utf8("model", self.model, SHORT_TEXT_MAX)
        utf8("hardware_rev", self.hardware_rev, SHORT_TEXT_MAX)
        utf8("firmware", self.firmware, SHORT_TEXT_MAX)

    def _write(self, w: Writer) -> None:
        w.fixed_str("serial", self.serial, SERIAL_WIDTH)
        w.str8("model", self.model, SHORT_TEXT_MAX)
        w.str8("hardware_rev", self.hardware_rev, SHORT_TEXT_MAX)
        w.str8("firmware", self.firmware, SHORT_TEXT_MAX)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(
            r.fixed_str("serial", SERIAL_WIDTH),
            r.str8("model"),
            r.str8("hardware_rev"),
            r.str8("firmware"),
        )


@dataclass(frozen=True, slots=True)
class ClockTime(Message):
    """Reply to GetClock: the device's UTC clock in ms since the Unix epoch."""

    TYPE_ID: ClassVar[int] = 0x93
    IS_REQUEST: ClassVar[bool] = False
    utc_ms: int

    def __post_init__(self) -> None:
        _check_time("utc_ms", self.utc_ms)

    def _write(self, w: Writer) -> None:
        w.u64(self.utc_ms)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64())


@dataclass(frozen=True, slots=True)
class BatteryStatus(Message):
    """Battery state. Temperature travels in tenths of a degree, so it is rounded to 0.1."""

    TYPE_ID: ClassVar[int] = 0x95
    IS_REQUEST: ClassVar[bool] = False
    percent: int
    millivolts: int
    charging: bool
    temperature_c: float
    cycle_count: int
    health_percent: int

    def __post_init__(self) -> None:
        check_int("percent", self.percent, 0, 100)
        check_int("millivolts", self.millivolts, 0, 0xFFFF)
        if not isinstance(self.charging, bool):
            raise FieldError("charging must be a bool")
        if not isinstance(self.temperature_c, int | float) or isinstance(self.temperature_c, bool):
            raise FieldError("temperature_c must be a number")
        if not -3276.8 <= self.temperature_c <= 3276.7:  # also rejects NaN
            raise FieldError(f"temperature_c={self.temperature_c} out of range")
        check_int("cycle_count", self.cycle_count, 0, U32_MAX)
        check_int("health_percent", self.health_percent, 0, 100)

    def _write(self, w: Writer) -> None:
        w.u8(self.percent)
        w.u16(self.millivolts)
        w.boolean(self.charging)
        w.i16(round(self.temperature_c * 10))
        w.u32(self.cycle_count)
        w.u8(self.health_percent)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u8(), r.u16(), r.boolean(), r.i16() / 10, r.u32(), r.u8())


@dataclass(frozen=True, slots=True)
class StorageStatus(Message):
    TYPE_ID: ClassVar[int] = 0x96
    IS_REQUEST: ClassVar[bool] = False
    total_bytes: int
    free_bytes: int
    file_count: int
    recording: bool

    def __post_init__(self) -> None:
        check_int("total_bytes", self.total_bytes, 0, U64_MAX)
        check_int("free_bytes", self.free_bytes, 0, U64_MAX)
        check_int("file_count", self.file_count, 0, U32_MAX)
        if not isinstance(self.recording, bool):
            raise FieldError("recording must be a bool")

    def _write(self, w: Writer) -> None:
        w.u64(self.total_bytes)
        w.u64(self.free_bytes)
        w.u32(self.file_count)
        w.boolean(self.recording)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64(), r.u64(), r.u32(), r.boolean())


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """One file on the recorder. ``name`` is raw bytes relative to the storage root."""

    name: bytes
    size: int
    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        check_recording_name(self.name)
        check_int("size", self.size, 0, U64_MAX)
        _check_time("start_ms", self.start_ms)
        _check_time("end_ms", self.end_ms)

    @property
    def wire_size(self) -> int:
        return 2 + len(self.name) + 24

    def _write(self, w: Writer) -> None:
        w.bytes16(self.name)
        w.u64(self.size)
        w.u64(self.start_ms)
        w.u64(self.end_ms)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.bytes16(), r.u64(), r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class RecordingPage(Message):
    """Reply to ListRecordings: ``total`` files on the device, and the page's entries."""

    TYPE_ID: ClassVar[int] = 0x98
    IS_REQUEST: ClassVar[bool] = False
    total: int
    entries: tuple[RecordingInfo, ...]

    def __post_init__(self) -> None:
        check_int("total", self.total, 0, U32_MAX)
        _check_entries("entries", self.entries, RecordingInfo)

    def _write(self, w: Writer) -> None:
        w.u32(self.total)
        w.u16(len(self.entries))
        for e in self.entries:
            e._write(w)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        total = r.u32()
        return cls(total, tuple(RecordingInfo._read(r) for _ in range(r.u16())))


@dataclass(frozen=True, slots=True)
class DeviceLogEvent:
    """One device event-log entry; ``kind`` is a LogKind, or a plain int if unknown."""

    index: int
    time_ms: int
    kind: int
    detail: str

    def __post_init__(self) -> None:
        check_int("index", self.index, 0, U32_MAX)
        _check_time("time_ms", self.time_ms)
        check_int("kind", self.kind, 0, 0xFFFF)
        utf8("detail", self.detail, DETAIL_MAX)
        object.__setattr__(self, "kind", _kind(self.kind))

    @property
    def wire_size(self) -> int:
        return 4 + 8 + 2 + 2 + len(self.detail.encode("utf-8"))

    def _write(self, w: Writer) -> None:
        w.u32(self.index)
        w.u64(self.time_ms)
        w.u16(self.kind)
        w.str16("detail", self.detail, DETAIL_MAX)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u32(), r.u64(), r.u16(), r.str16("detail"))


@dataclass(frozen=True, slots=True)
class EventLogPage(Message):
    """Reply to GetEventLog; ``end_index`` is one past the newest entry on the device."""

    TYPE_ID: ClassVar[int] = 0x9A
    IS_REQUEST: ClassVar[bool] = False
    end_index: int
    entries: tuple[DeviceLogEvent, ...]

    def __post_init__(self) -> None:
        check_int("end_index", self.end_index, 0, U32_MAX)
        _check_entries("entries", self.entries, DeviceLogEvent)

    def _write(self, w: Writer) -> None:
        w.u32(self.end_index)
        w.u16(len(self.entries))
        for e in self.entries:
            e._write(w)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        end = r.u32()
        return cls(end, tuple(DeviceLogEvent._read(r) for _ in range(r.u16())))


@dataclass(frozen=True, slots=True)
class FirmwareStatus(Message):
    """Reply to GetFirmwareStatus: slots, the last update's result and the staged transfer."""

    TYPE_ID: ClassVar[int] = 0x9B
    IS_REQUEST: ClassVar[bool] = False
    running_version: str
    active_slot: str
    slot_a_version: str
    slot_b_version: str
    last_result: int
    staged_blake3: bytes
    staged_offset: int
    staged_size: int

    def __post_init__(self) -> None:
        utf8("running_version", self.running_version, SHORT_TEXT_MAX)
        if self.active_slot not in SLOTS:
            raise FieldError("active_slot must be 'A' or 'B'")
        utf8("slot_a_version", self.slot_a_version, SHORT_TEXT_MAX)
        utf8("slot_b_version", self.slot_b_version, SHORT_TEXT_MAX)
        check_int("last_result", self.last_result, 0, 0xFF)
        _check_bytes("staged_blake3", self.staged_blake3, DIGEST_BYTES)
        check_int("staged_offset", self.staged_offset, 0, U64_MAX)
        check_int("staged_size", self.staged_size, 0, U64_MAX)
        if self.staged_offset > self.staged_size:
            raise FieldError("staged_offset > staged_size")
        object.__setattr__(self, "last_result", _result(self.last_result))

    def _write(self, w: Writer) -> None:
        w.str8("running_version", self.running_version, SHORT_TEXT_MAX)
        w.u8(ord(self.active_slot))
        w.str8("slot_a_version", self.slot_a_version, SHORT_TEXT_MAX)
        w.str8("slot_b_version", self.slot_b_version, SHORT_TEXT_MAX)
        w.u8(self.last_result)
        w.raw(self.staged_blake3)
        w.u64(self.staged_offset)
        w.u64(self.staged_size)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        running = r.str8("running_version")
        slot = chr(r.u8())
        return cls(running, slot, r.str8("slot_a_version"), r.str8("slot_b_version"), r.u8(),
                   r.raw(DIGEST_BYTES), r.u64(), r.u64())


@dataclass(frozen=True, slots=True)
class FirmwareBegin(Message):
    """Reply to FirmwareBeginRequest: where to continue (the durable offset; 0 for a new
    image) and the largest chunk the recorder takes."""

    TYPE_ID: ClassVar[int] = 0x9C
    IS_REQUEST: ClassVar[bool] = False
    offset: int
    chunk_max: int

    def __post_init__(self) -> None:
        check_int("offset", self.offset, 0, U64_MAX)
        check_int("chunk_max", self.chunk_max, 1, FIRMWARE_CHUNK_MAX)

    def _write(self, w: Writer) -> None:
        w.u64(self.offset)
        w.u32(self.chunk_max)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64(), r.u32())


@dataclass(frozen=True, slots=True)
class FirmwareProgress(Message):
    """Reply to FirmwareChunk: the recorder's durable offset (it may lag the bytes sent)."""

    TYPE_ID: ClassVar[int] = 0x9D
    IS_REQUEST: ClassVar[bool] = False
    durable_offset: int

    def __post_init__(self) -> None:
        check_int("durable_offset", self.durable_offset, 0, U64_MAX)

    def _write(self, w: Writer) -> None:
        w.u64(self.durable_offset)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u64())


@dataclass(frozen=True, slots=True)
class FirmwareRefusal(Message):
    """A firmware step was refused; carries the recorder's durable offset to resume from."""

    TYPE_ID: ClassVar[int] = 0x9E
    IS_REQUEST: ClassVar[bool] = False
    code: int
    durable_offset: int
    message: str = ""

    def __post_init__(self) -> None:
        check_int("code", self.code, 0, 0xFFFF)
        check_int("durable_offset", self.durable_offset, 0, U64_MAX)
        utf8("message", self.message, ERROR_TEXT_MAX)
        object.__setattr__(self, "code", _code(self.code))

    def _write(self, w: Writer) -> None:
        w.u16(self.code)
        w.u64(self.durable_offset)
        w.str8("message", self.message, ERROR_TEXT_MAX)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u16(), r.u64(), r.str8("message"))


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A command failed; ``code`` is an ErrorCode, or a plain int if unknown."""

    TYPE_ID: ClassVar[int] = 0xFF
    IS_REQUEST: ClassVar[bool] = False
    code: int
    message: str = ""

    def __post_init__(self) -> None:
        check_int("code", self.code, 0, 0xFFFF)
        utf8("message", self.message, ERROR_TEXT_MAX)
        object.__setattr__(self, "code", _code(self.code))

    def _write(self, w: Writer) -> None:
        w.u16(self.code)
        w.str8("message", self.message, ERROR_TEXT_MAX)

    @classmethod
    def _read(cls, r: Reader) -> Self:
        return cls(r.u16(), r.str8("message"))


def _check_entries(name: str, entries: object, kind: type) -> None:
    if not isinstance(entries, tuple) or not all(isinstance(e, kind) for e in entries):
        raise FieldError(f"{name} must be a tuple of {kind.__name__}")
    if len(entries) > 0xFFFF:
        raise FieldError(f"{name}: too many entries")


Request: TypeAlias = (
    HelloRequest
    | AuthStart
    | AuthProve
    | GetIdentity
    | GetOfficer
    | SetOfficer
    | GetClock
    | SetClock
    | GetBattery
    | GetStorage
    | SetMassStorage
    | ListRecordings
    | DeleteRecording
    | GetEventLog
    | GetFirmwareStatus
    | FirmwareBeginRequest
    | FirmwareChunk
    | FirmwareCommit
    | Reboot
)
Reply: TypeAlias = (
    Ok
    | Hello
    | AuthChallenge
    | AuthAccepted
    | Identity
    | OfficerRecord
    | ClockTime
    | BatteryStatus
    | StorageStatus
    | RecordingPage
    | EventLogPage
    | FirmwareStatus
    | FirmwareBegin
    | FirmwareProgress
    | FirmwareRefusal
    | ErrorReply
)
AnyMessage: TypeAlias = Request | Reply

REQUEST_TYPES: tuple[type[Message], ...] = (
    HelloRequest,
    AuthStart,
    AuthProve,
    GetIdentity,
    GetOfficer,
    SetOfficer,
    GetClock,
    SetClock,
    GetBattery,
    GetStorage,
    SetMassStorage,
    ListRecordings,
    DeleteRecording,
    GetEventLog,
    GetFirmwareStatus,
    FirmwareBeginRequest,
    FirmwareChunk,
    FirmwareCommit,
    Reboot,
)
REPLY_TYPES: tuple[type[Message], ...] = (
    Ok,
    Hello,
    AuthChallenge,
    AuthAccepted,
    Identity,
    OfficerRecord,
    ClockTime,
    BatteryStatus,
    StorageStatus,
    RecordingPage,
    EventLogPage,
    FirmwareStatus,
    FirmwareBegin,
    FirmwareProgress,
    FirmwareRefusal,
    ErrorReply,
)
MESSAGE_TYPES: dict[int, type[Message]] = {t.TYPE_ID: t for t in REQUEST_TYPES + REPLY_TYPES}
assert len(MESSAGE_TYPES) == len(REQUEST_TYPES) + len(REPLY_TYPES), "duplicate TYPE_ID"

# Which reply type a successful request gets (ErrorReply is always possible too).
EXPECTED_REPLY: dict[type[Message], type[Message]] = {
    HelloRequest: Hello,
    AuthStart: AuthChallenge,
    AuthProve: AuthAccepted,
    GetIdentity: Identity,
    GetOfficer: OfficerRecord,
    SetOfficer: Ok,
    GetClock: ClockTime,
    SetClock: Ok,
    GetBattery: BatteryStatus,
    GetStorage: StorageStatus,
    SetMassStorage: Ok,
    ListRecordings: RecordingPage,
    DeleteRecording: Ok,
    GetEventLog: EventLogPage,
    GetFirmwareStatus: FirmwareStatus,
    FirmwareBeginRequest: FirmwareBegin,
    FirmwareChunk: FirmwareProgress,
    FirmwareCommit: Ok,
    Reboot: Ok,
}


def decode_message(type_id: int, payload: bytes) -> AnyMessage:
    """Decode one payload of the given type; PayloadError/FieldError if it is not valid."""
    cls = MESSAGE_TYPES.get(type_id)
    if cls is None:
        raise PayloadError(f"unknown message type {type_id:#04x}")
    return cls.decode_payload(payload)  # type: ignore[return-value]  # all are AnyMessage
