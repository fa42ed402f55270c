"""The one check of a person-typed text field of a lifecycle request (names, purposes,
case numbers, labels): a string, trimmed, 1..limit characters, no control characters."""

from __future__ import annotations

from agent.lifecycle.errors import LifecycleError


def printable_text(value: object, name: str, *, limit: int,
                   error: type[LifecycleError]) -> str:
    """`value` trimmed, or `error` naming the field and what is wrong with it."""
    if not isinstance(value, str):
        raise error(f"{name} must be a string")
    value = value.strip()
    if not value or len(value) > limit or any(ord(c) < 0x20 or ord(c) == 0x7F
                                              for c in value):
        raise error(f"{name} must be 1..{limit} printable characters")
    return value
