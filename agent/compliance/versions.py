"""Firmware version arithmetic: dotted decimals ("1.4.2", 1..4 parts, as in package
manifests), compared with missing parts as zero."""

from __future__ import annotations

import re

VersionKey = tuple[int, int, int, int]
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}")


def version_key(text: str) -> VersionKey | None:
    """"1.4" -> (1, 4, 0, 0); None for what is not a version (a recorder's claim may not be)."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        return None
    parts = [int(p) for p in text.split(".")] + [0, 0, 0]
    return (parts[0], parts[1], parts[2], parts[3])


def same_version(a: str, b: str) -> bool:
    ka, kb = version_key(a), version_key(b)
    return ka is not None and ka == kb
