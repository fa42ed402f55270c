"""Wire field kinds: what a message field is on the line, declared once per field.

A message declares each field as ``name: Annotated[python type, FieldKind]`` (see
``messages``); the kind checks a value, writes it and reads it back, so encoding, decoding
and validation all come from that one declaration. Pure, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar

from firmware_bridge.errors import FieldError, PayloadError
from firmware_bridge.wire import Reader, Writer, check_int, utf8


class WireRecord(Protocol):
    """A record with declared fields (a message, or an entry nested in one)."""

    def write_fields(self, w: Writer) -> None: ...

    @classmethod
    def read_fields(cls, r: Reader) -> Self: ...

    @classmethod
    def spelling(cls) -> str: ...


T = TypeVar("T")
R = TypeVar("R", bound=WireRecord)


class FieldKind(Generic[T]):
    """Base: ``check`` raises FieldError for a value that cannot go on the wire and returns
    it typed, possibly normalised (an enum member for a known code)."""

    def check(self, name: str, value: object) -> T:
        raise NotImplementedError

    def spelling(self, name: str) -> str:
        """How docs/protocol.md writes the field ("utc_ms u64")."""
        raise NotImplementedError

    def write(self, w: Writer, name: str, value: T) -> None:
        raise NotImplementedError

    def read(self, r: Reader, name: str) -> T:
        raise NotImplementedError


def _int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"{name} must be an int, got {type(value).__name__}")
    check_int(name, value, lo, hi)
    return value


def _bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise FieldError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def _str(name: str, value: object, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise FieldError(f"{name} must be a str, got {type(value).__name__}")
    utf8(name, value, max_bytes)
    return value


_INT_WRITERS: dict[int, Callable[[Writer, int], None]] = {
    1: Writer.u8, 2: Writer.u16, 4: Writer.u32, 8: Writer.u64}
_INT_READERS: dict[int, Callable[[Reader], int]] = {
    1: Reader.u8, 2: Reader.u16, 4: Reader.u32, 8: Reader.u64}


@dataclass(frozen=True)
class UInt(FieldKind[int]):
    """Unsigned big-endian integer of ``size`` bytes, within lo..hi (default: all of it)."""

    size: int
    lo: int = 0
    hi: int | None = None

    @property
    def top(self) -> int:
        return (1 << (8 * self.size)) - 1 if self.hi is None else self.hi

    def check(self, name: str, value: object) -> int:
        return _int(name, value, self.lo, self.top)

    def spelling(self, name: str) -> str:
        return f"{name} u{8 * self.size}"

    def write(self, w: Writer, name: str, value: int) -> None:
        _INT_WRITERS[self.size](w, value)

    def read(self, r: Reader, name: str) -> int:
        return _INT_READERS[self.size](r)


@dataclass(frozen=True)
class Coded(UInt):
    """An unsigned code; known values become members of ``codes``, unknown stay ints."""

    codes: type[enum.IntEnum] | None = None

    def check(self, name: str, value: object) -> int:
        number = super().check(name, value)
        if self.codes is not None:
            try:
                return self.codes(number)
            except ValueError:
                return number
        return number


class Flag(FieldKind[bool]):
    """One byte, 00 or 01."""

    def check(self, name: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise FieldError(f"{name} must be a bool")
        return value

    def spelling(self, name: str) -> str:
        return f"{name} bool"

    def write(self, w: Writer, name: str, value: bool) -> None:
        w.boolean(value)

    def read(self, r: Reader, name: str) -> bool:
        return r.boolean()


class Tenths(FieldKind[float]):
    """A number sent as i16 tenths (rounded to 0.1)."""

    def check(self, name: str, value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise FieldError(f"{name} must be a number")
        if not -3276.8 <= value <= 3276.7:  # also rejects NaN
            raise FieldError(f"{name}={value} out of range")
        return value

    def spelling(self, name: str) -> str:
        return f"{name} i16"

    def write(self, w: Writer, name: str, value: float) -> None:
        w.i16(round(value * 10))

    def read(self, r: Reader, name: str) -> float:
        return r.i16() / 10


@dataclass(frozen=True)
class FixedText(FieldKind[str]):
    """UTF-8 NUL-padded to exactly ``width`` bytes."""

    width: int

    def check(self, name: str, value: object) -> str:
        return _str(name, value, self.width)

    def spelling(self, name: str) -> str:
        return f"{name} fixed{self.width}"

    def write(self, w: Writer, name: str, value: str) -> None:
        w.fixed_str(name, value, self.width)

    def read(self, r: Reader, name: str) -> str:
        return r.fixed_str(name, self.width)


@dataclass(frozen=True)
class Text(FieldKind[str]):
    """UTF-8 with a u8 (``wide=False``) or u16 length, at most ``max_bytes``."""

    max_bytes: int
    wide: bool = False

    def check(self, name: str, value: object) -> str:
        return _str(name, value, self.max_bytes)

    def spelling(self, name: str) -> str:
        return f"{name} str{16 if self.wide else 8}"

    def write(self, w: Writer, name: str, value: str) -> None:
        (w.str16 if self.wide else w.str8)(name, value, self.max_bytes)

    def read(self, r: Reader, name: str) -> str:
        return r.str16(name) if self.wide else r.str8(name)


@dataclass(frozen=True)
class Blob(FieldKind[bytes]):
    """Raw bytes with a u16 length, min_bytes..max_bytes; ``check_more`` for content rules."""

    min_bytes: int
    max_bytes: int
    check_more: Callable[[bytes], None] | None = None

    def check(self, name: str, value: object) -> bytes:
        data = _bytes(name, value)
        if self.check_more is not None:  # its message is the more specific one
            self.check_more(data)
        if not self.min_bytes <= len(data) <= self.max_bytes:
            raise FieldError(f"{name} must be {self.min_bytes}..{self.max_bytes} bytes")
        return data

    def spelling(self, name: str) -> str:
        return f"{name} bytes16"

    def write(self, w: Writer, name: str, value: bytes) -> None:
        w.bytes16(value)

    def read(self, r: Reader, name: str) -> bytes:
        return r.bytes16()


@dataclass(frozen=True)
class Raw(FieldKind[bytes]):
    """Exactly ``size`` raw bytes."""

    size: int

    def check(self, name: str, value: object) -> bytes:
        if not isinstance(value, bytes) or len(value) != self.size:
            raise FieldError(f"{name} must be exactly {self.size} bytes")
        return value

    def spelling(self, name: str) -> str:
        return f"{name} [{self.size}]"

    def write(self, w: Writer, name: str, value: bytes) -> None:
        w.raw(value)

    def read(self, r: Reader, name: str) -> bytes:
        return r.raw(self.size)


@dataclass(frozen=True)
class Letter(FieldKind[str]):
    """One ASCII letter out of ``allowed``, sent as a u8."""

    allowed: str

    def check(self, name: str, value: object) -> str:
        if not isinstance(value, str) or len(value) != 1 or value not in self.allowed:
            raise FieldError(f"{name} must be one of {', '.join(self.allowed)}")
        return value

    def spelling(self, name: str) -> str:
        return f"{name} u8"

    def write(self, w: Writer, name: str, value: str) -> None:
        w.u8(ord(value))

    def read(self, r: Reader, name: str) -> str:
        value = chr(r.u8())
        if value not in self.allowed:
            raise PayloadError(f"{name} must be one of {', '.join(self.allowed)}")
        return value


@dataclass(frozen=True)
class Nested(FieldKind[R]):
    """Another record's fields, inline."""

    record: type[R]

    def check(self, name: str, value: object) -> R:
        if not isinstance(value, self.record):
            raise FieldError(f"{name} must be a {self.record.__name__}")
        return value

    def spelling(self, name: str) -> str:
        return f"{self.record.__name__}'s payload"

    def write(self, w: Writer, name: str, value: R) -> None:
        value.write_fields(w)

    def read(self, r: Reader, name: str) -> R:
        return self.record.read_fields(r)


@dataclass(frozen=True)
class Entries(FieldKind[tuple[R, ...]]):
    """A u16 count, then that many records."""

    record: type[R]

    def check(self, name: str, value: object) -> tuple[R, ...]:
        if not isinstance(value, tuple) or not all(isinstance(e, self.record) for e in value):
            raise FieldError(f"{name} must be a tuple of {self.record.__name__}")
        if len(value) > 0xFFFF:
            raise FieldError(f"{name}: too many entries")
        return value

    def spelling(self, name: str) -> str:
        return f"count u16, count × ({self.record.spelling()})"

    def write(self, w: Writer, name: str, value: tuple[R, ...]) -> None:
        w.u16(len(value))
        for e in value:
            e.write_fields(w)

    def read(self, r: Reader, name: str) -> tuple[R, ...]:
        return tuple(self.record.read_fields(r) for _ in range(r.u16()))
