"""Store-side names of recorder files (pure).

A recorder file is stored under its base name made safe by `agent.store.layout`
(invalid UTF-8, control characters, separators, a leading dot or more than 255 bytes are
replaced, and a `~` + 8-hex BLAKE3 tag of the original bytes is appended whenever
anything changed, so the result is deterministic and two originals never share it).
The original bytes are always kept in the custody record's `source_name`.

Two different recorder files can still want the same stored path (same base name in two
sub-directories, recorded on the same day); the later one gets `~` + 12 hex digits of
the BLAKE3 of its full source path appended to the stem (`disambiguated`).

While being written a file is named `.partial-<32 hex digits of BLAKE3(serial, NUL,
source path)>` in its target directory: deterministic, so a resume finds it, and hidden
from the index and the fixity audit by the layout's partial-name rule.
"""

from __future__ import annotations

import blake3

from agent.store.layout import PARTIAL_PREFIX, sanitize_component


def disambiguated(name: str, source_name: bytes) -> str:
    """A second deterministic name for when `name` is already taken by another file."""
    tag = blake3.blake3(source_name).hexdigest()[:12]
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 and len(name) - dot <= 16 else (name, "")
    return sanitize_component(f"{stem}~{tag}{ext}", keep_extension=True)


def partial_name(recorder_serial: str, source_name: bytes) -> str:
    """The temporary name a file is written under until it is complete and durable."""
    key = recorder_serial.encode("utf-8") + b"\0" + source_name
    return PARTIAL_PREFIX + blake3.blake3(key).hexdigest()[:32]
