"""Mount point names derived from recorder keys.

The key is the recorder's USB serial, which the device chooses: it may hold '/', '..',
spaces or be very long. The name keeps a readable, filtered prefix for operators and adds
a hash of the whole key, so two keys never share a mount point and nothing escapes the
mount root.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def is_safe_name(name: object) -> bool:
    """A single path component of safe characters (never '.', '..' or hidden)."""
    return isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name))


def mount_name(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    readable = _UNSAFE_CHARS.sub("_", key).strip("._-")[:40]
    name = f"{readable}-{digest}" if readable else digest
    assert is_safe_name(name)
    return name
