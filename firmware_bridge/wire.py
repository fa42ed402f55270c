"""Primitive field encoding for message payloads (big-endian, strict, pure)."""

from __future__ import annotations

import struct

from firmware_bridge.errors import FieldError, PayloadError

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def check_int(name: str, value: int, lo: int, hi: int) -> None:
    """Raise FieldError unless ``lo <= value <= hi`` (and value is a real int, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise FieldError(f"{name}={value} out of range [{lo}, {hi}]")


def utf8(name: str, value: str, max_bytes: int) -> bytes:
    """UTF-8 bytes of ``value``; NUL is refused because fixed fields are NUL-padded."""
    if not isinstance(value, str):
        raise FieldError(f"{name} must be a str, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise FieldError(f"{name} is not encodable as UTF-8") from exc
    if b"\x00" in raw:
        raise FieldError(f"{name} must not contain NUL")
    if len(raw) > max_bytes:
        raise FieldError(f"{name} is {len(raw)} bytes of UTF-8, at most {max_bytes} fit")
    return raw


class Writer:
    """Appends fields to a payload."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self._parts.append(_U8.pack(v))

    def u16(self, v: int) -> None:
        self._parts.append(_U16.pack(v))

    def i16(self, v: int) -> None:
        self._parts.append(_I16.pack(v))

    def u32(self, v: int) -> None:
        self._parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        self._parts.append(_U64.pack(v))

    def boolean(self, v: bool) -> None:
        self._parts.append(b"\x01" if v else b"\x00")

    def raw(self, b: bytes) -> None:
        self._parts.append(bytes(b))

    def fixed_str(self, name: str, v: str, width: int) -> None:
        """Fixed-width UTF-8 field, NUL-padded to ``width`` bytes."""
        self._parts.append(utf8(name, v, width).ljust(width, b"\x00"))

    def str8(self, name: str, v: str, max_bytes: int) -> None:
        raw = utf8(name, v, min(max_bytes, 0xFF))
        self.u8(len(raw))
        self._parts.append(raw)

    def str16(self, name: str, v: str, max_bytes: int) -> None:
        raw = utf8(name, v, min(max_bytes, 0xFFFF))
        self.u16(len(raw))
        self._parts.append(raw)

    def bytes16(self, v: bytes) -> None:
        self.u16(len(v))
        self._parts.append(bytes(v))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Consumes fields from a payload; every short read or trailing byte is a PayloadError."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise PayloadError(f"payload truncated: needed {n} bytes at offset {self._pos}")
        out = bytes(self._data[self._pos : end])
        self._pos = end
        return out

    def u8(self) -> int:
        return int(_U8.unpack(self._take(1))[0])

    def u16(self) -> int:
        return int(_U16.unpack(self._take(2))[0])

    def i16(self) -> int:
        return int(_I16.unpack(self._take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def boolean(self) -> bool:
        b = self.u8()
        if b > 1:
            raise PayloadError(f"boolean byte must be 0 or 1, got {b}")
        return b == 1

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def fixed_str(self, name: str, width: int) -> str:
        raw = self._take(width)
        text, _, pad = raw.partition(b"\x00")
        if pad.strip(b"\x00"):
            raise PayloadError(f"{name}: bytes after the NUL padding")
        return _decode_utf8(name, text)

    def str8(self, name: str) -> str:
        return _decode_utf8(name, self._take(self.u8()))

    def str16(self, name: str) -> str:
        return _decode_utf8(name, self._take(self.u16()))

    def bytes16(self) -> bytes:
        return self._take(self.u16())

    def end(self) -> None:
        if self._pos != len(self._data):
            raise PayloadError(f"{len(self._data) - self._pos} unexpected trailing payload bytes")


def _decode_utf8(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{name} is not valid UTF-8") from exc
