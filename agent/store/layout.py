"""Where evidence files live in the store (regulation 004 §19): safe, predictable paths.

    <store>/<unit no>/<device serial>/<officer no>/<YYYY-MM-DD>/<file>

The date is the recording start date in the unit's time zone. Every component is
sanitised so no recorder-supplied or configured value can escape the store or collide
with our own temporary files:

- `/`, `\\`, NUL and other control characters become `_`; invalid UTF-8 becomes U+FFFD;
- a leading `.` becomes `_` (so never `.`, `..`, hidden files or `.partial-` names);
- an empty unit or officer becomes `_unassigned`, an empty serial `_unknown`;
- a component is cut to 255 bytes of UTF-8 (keeping a file's extension);
- whenever a value had to be changed, `~` and 8 hex digits of the BLAKE3 of the original
  bytes are appended (before the extension), so two different originals never map to the
  same stored name.

Files being written are named `.partial-<anything>` (`PARTIAL_PREFIX`); they are never
index entries, and the fixity audit ignores them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo

from blake3 import blake3

from agent.store.errors import LayoutError

PLACEHOLDER = "_unassigned"
UNKNOWN_SERIAL = "_unknown"
PARTIAL_PREFIX = ".partial-"
MAX_COMPONENT_BYTES = 255
_SUFFIX_BYTES = 9  # "~" + 8 hex digits
_MAX_EXT_CHARS = 16


def is_partial_name(name: str) -> bool:
    """True for the temporary names of in-progress offloads."""
    return name.startswith(PARTIAL_PREFIX)


def partial_name(final_name: str, token: str) -> str:
    """A temporary name for writing `final_name`; `token` keeps concurrent writers apart."""
    return sanitize_component(f"{PARTIAL_PREFIX}{token}-{final_name}", allow_partial=True)


def sanitize_component(value: str | bytes, *, placeholder: str = PLACEHOLDER,
                       keep_extension: bool = False, allow_partial: bool = False) -> str:
    """One safe path component (see the module docstring for the rules)."""
    original = value if isinstance(value, bytes) else _raw(value)
    if not original:
        return placeholder
    text = original.decode("utf-8", "replace")
    chars = ["_" if (c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F) else c for c in text]
    if chars and chars[0] == "." and not (allow_partial and is_partial_name(text)):
        chars[0] = "_"
    clean = "".join(chars)
    changed = clean.encode("utf-8") != original
    if changed or len(clean.encode("utf-8")) > MAX_COMPONENT_BYTES:
        stem, ext = _split_ext(clean) if keep_extension else (clean, "")
        budget = MAX_COMPONENT_BYTES - _SUFFIX_BYTES - len(ext.encode("utf-8"))
        stem = _cut_utf8(stem, budget)
        clean = f"{stem}~{blake3(original).hexdigest()[:8]}{ext}"
    return clean


def layout_relpath(unit_no: str, device_serial: str, officer_no: str, day: dt.date,
                   filename: str | bytes) -> str:
    """The stored path of one file, relative to the store root."""
    if not filename:
        raise LayoutError("a stored file needs a name")
    parts = [
        sanitize_component(unit_no),
        sanitize_component(device_serial, placeholder=UNKNOWN_SERIAL),
        sanitize_component(officer_no),
        day.isoformat(),
        sanitize_component(filename, keep_extension=True),
    ]
    return "/".join(parts)


def recording_day(time_us: int, tz: str | dt.tzinfo) -> dt.date:
    """The calendar day of a UTC instant in the unit's time zone."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=time_us)
    return instant.astimezone(zone).date()


def check_relpath(relpath: str) -> PurePosixPath:
    """Refuse any stored path that could leave the store or hide among temporary files."""
    if not relpath or "\x00" in relpath or "\\" in relpath:
        raise LayoutError(f"invalid stored path {relpath!r}")
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LayoutError(f"stored path {relpath!r} is not valid Unicode") from exc
    path = PurePosixPath(relpath)
    if path.is_absolute():
        raise LayoutError(f"stored path {relpath!r} must be relative to the store")
    raw_parts = relpath.split("/")
    for part in raw_parts:
        if part in ("", ".", ".."):
            raise LayoutError(f"stored path {relpath!r} has an empty, '.' or '..' component")
        if len(_raw(part)) > MAX_COMPONENT_BYTES:
            raise LayoutError(f"stored path {relpath!r} has a component over 255 bytes")
        if is_partial_name(part):
            raise LayoutError(f"stored path {relpath!r} uses the temporary-file prefix")
    return path


def _raw(text: str) -> bytes:
    """The bytes a str stands for: os-decoded names carry undecodable bytes as surrogates."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")  # lone surrogates: keep them distinct


def _split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > _MAX_EXT_CHARS:
        return name, ""
    return name[:dot], name[dot:]


def _cut_utf8(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max(max_bytes, 0)].decode("utf-8", "ignore")
