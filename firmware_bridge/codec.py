"""Framing: message <-> bytes on the line (sans-I/O).

A frame on the line is ``00 | COBS(type u8 | request_id u16 | payload | crc32 u32) | 00``
(big-endian; CRC-32/ISO-HDLC as zlib.crc32 over everything before it). The leading 0x00
ends any junk before the frame, so a receiver resynchronises on the next good frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, fields

from firmware_bridge.cobs import cobs_decode, cobs_encode
from firmware_bridge.errors import FieldError, FrameError, PayloadError, ProtocolError
from firmware_bridge.messages import MAX_PAYLOAD, Message, decode_message

DELIMITER = b"\x00"
HEADER = struct.Struct(">BH")
CRC = struct.Struct(">I")
MIN_RAW = HEADER.size + CRC.size
MAX_RAW = HEADER.size + MAX_PAYLOAD + CRC.size
MAX_ENCODED = MAX_RAW + MAX_RAW // 254 + 1  # COBS overhead bound
MAX_REQUEST_ID = 0xFFFF


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid frame: the request id it belongs to and its decoded message."""

    request_id: int
    message: Message


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame whose CRC was good but whose type or payload was not valid.

    Kept apart from line noise because the sender is known: a device answers it with an
    error reply for ``request_id``.
    """

    request_id: int
    type_id: int
    error: PayloadError


@dataclass(slots=True)
class DecoderStats:
    """Counters of everything the decoder saw; all but ``frames`` are discards."""

    frames: int = 0  # valid frames delivered
    rejected: int = 0  # CRC-good frames with unknown type or bad payload
    crc_errors: int = 0
    cobs_errors: int = 0
    short_frames: int = 0
    oversized: int = 0

    @property
    def discarded(self) -> int:
        return (
            self.rejected + self.crc_errors + self.cobs_errors + self.short_frames + self.oversized
        )

    def as_dict(self) -> dict[str, int]:
        d = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        d["discarded"] = self.discarded
        return d


def encode_frame(request_id: int, message: Message) -> bytes:
    """Bytes to put on the line for one message (delimiters included)."""
    if not 0 <= request_id <= MAX_REQUEST_ID:
        raise FieldError(f"request_id {request_id} out of range")
    payload = message.encode_payload()
    if len(payload) > MAX_PAYLOAD:
        raise FieldError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = HEADER.pack(message.TYPE_ID, request_id) + payload
    return DELIMITER + cobs_encode(body + CRC.pack(zlib.crc32(body))) + DELIMITER


def _unframe(encoded: bytes) -> tuple[int, int, bytes]:
    """(type_id, request_id, payload) of one COBS-encoded frame, without delimiters."""
    if len(encoded) > MAX_ENCODED:
        raise FrameError(f"frame of {len(encoded)} encoded bytes exceeds {MAX_ENCODED}")
    raw = cobs_decode(encoded)
    if len(raw) < MIN_RAW:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than {MIN_RAW}")
    if len(raw) > MAX_RAW:
        raise FrameError(f"frame of {len(raw)} bytes exceeds {MAX_RAW}")
    body, (crc,) = raw[: -CRC.size], CRC.unpack(raw[-CRC.size :])
    if zlib.crc32(body) != crc:
        raise FrameError("CRC mismatch")
    type_id, request_id = HEADER.unpack(body[: HEADER.size])
    return type_id, request_id, body[HEADER.size :]


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame (delimiters optional); raises FrameError or PayloadError."""
    encoded = data.strip(DELIMITER)
    if DELIMITER in encoded:
        raise FrameError("more than one frame")
    type_id, request_id, payload = _unframe(encoded)
    return Frame(request_id, decode_message(type_id, payload))


class FrameDecoder:
    """Incremental decoder: feed any chunks of the byte stream, get frames out.

    Never raises: junk, truncated, oversized, corrupt and unknown frames are counted in
    ``stats`` and skipped; decoding resumes at the next delimiter.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._overflow = False  # dropping bytes until the next delimiter

    def feed(self, data: bytes) -> list[Frame | Rejected]:
        out: list[Frame | Rejected] = []
        start = 0
        while True:
            zero = data.find(0, start)
            if zero < 0:
                self._append(data[start:])
                return out
            self._append(data[start:zero])
            start = zero + 1
            if self._overflow:
                self._overflow = False
            elif self._buf:
                item = self._decode(bytes(self._buf))
                if item is not None:
                    out.append(item)
            self._buf.clear()

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the link was reopened)."""
        self._buf.clear()
        self._overflow = False

    def _append(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        if len(self._buf) + len(chunk) > MAX_ENCODED:
            self._buf.clear()
            self._overflow = True
            self.stats.oversized += 1
            return
        self._buf += chunk

    def _decode(self, encoded: bytes) -> Frame | Rejected | None:
        s = self.stats
        try:
            raw = cobs_decode(encoded)
        except FrameError:
            s.cobs_errors += 1
            return None
        if len(raw) < MIN_RAW:
            s.short_frames += 1
            return None
        if len(raw) > MAX_RAW:
            s.oversized += 1
            return None
        body = raw[: -CRC.size]
        if zlib.crc32(body) != CRC.unpack(raw[-CRC.size :])[0]:
            s.crc_errors += 1
            return None
        type_id, request_id = HEADER.unpack(body[: HEADER.size])
        try:
            message = decode_message(type_id, body[HEADER.size :])
        except ProtocolError as exc:
            s.rejected += 1
            err = exc if isinstance(exc, PayloadError) else PayloadError(str(exc))
            return Rejected(request_id, type_id, err)
        s.frames += 1
        return Frame(request_id, message)
