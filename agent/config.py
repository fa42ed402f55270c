"""Load and validate the TOML configuration against the settings model in `agent.settings`.

The loader is generic: it walks the dataclass fields and their type hints, so a new
setting needs no loader code. Every problem (syntax, unknown key, wrong type, range,
missing key, cross-field rule, unreadable input file) becomes a `ConfigIssue` naming the
file, the dotted key and the line; all issues are reported together in one
`ConfigInvalid`, and no `Settings` object exists unless the whole file is valid.

Conventions an operator relies on (documented in the README):
- An optional setting (`X | None`) is unset by omitting it or by writing the string "none".
- Of two alternative settings (deadline hours / working_days, readiness min_free_gb /
  min_free_hours) setting only the second one unsets the first.
- Relative paths are relative to the directory of the config file.
- Input files the operator provides (fleet secret, holiday lists, TLS material, MQTT
  password) are checked here, at config time; directories and keys the agent creates
  itself (state, store, runtime, signing key, sockets) are checked at start-up.

This module also derives the JSON Schema, the README reference table and the udev rules
from the same model, so they cannot drift from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import settings as model
from agent.devices.errors import DeviceConfigError
from agent.devices.ports import BayMap
from agent.inputfiles import (
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    InputFileError,
    read_input_file,
)
from agent.settings import (
    DeadlineSettings,
    DeviceSettings,
    MqttSettings,
    ReadinessSettings,
    Settings,
    UploadSettings,
)

DEFAULT_CONFIG_PATH = Path("/etc/dock-agent/dock-agent.toml")
UNSET = "none"  # the string that unsets an optional setting
FLEET_SECRET_MIN_BYTES = 16  # after stripping surrounding white space, as the agent reads it

SECTION_HELP: dict[str, str] = {
    "dock": "This dock's identity, time zone and where it keeps its state.",
    "devices": "Where recorders come from and which ones may dock.",
    "recorder": "Talking to recorder firmware over the serial control port.",
    "clock": "Checking and setting recorder clocks.",
    "mount": "How recorder storage is mounted.",
    "offload": "Copying footage off recorders into the evidence store.",
    "deadline": "The footage storage deadline (late-offload and not-docked reports).",
    "readiness": "Pre-shift readiness criteria.",
    "mqtt": "Reporting to the central service.",
    "health": "Dock health sampling and fault thresholds.",
    "control": "Local control socket (dockctl) and metrics.",
    "upload": "Verified upload of stored footage to an S3-compatible object store.",
    "retention": "When uploaded, centrally acknowledged footage may leave the dock.",
    "screen": "The dock screen (dock-screen): a read-only readiness board in a browser.",
    "logging": "Log output.",
    "access": "Approved access to stored footage: views and exports (access register).",
    "audit": "Scheduled fixity audit of the evidence store.",
    "firmware": "Recorder firmware: trusted package keys, target versions, update policy.",
}

# Pairs of alternative settings: giving only the second unsets the first.
ALTERNATIVES: tuple[tuple[str, str, str], ...] = (
    ("deadline", "hours", "working_days"),
    ("readiness", "min_free_gb", "min_free_hours"),
)

_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_DOCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ConfigError(Exception):
    """Base of configuration errors."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a configuration file (or in a file it refers to)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigInvalid(ConfigError):
    """The configuration has one or more problems; `issues` lists all of them."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# --------------------------------------------------------------------------- locating keys


def _split_dotted(text: str) -> list[str]:
    """Split a TOML dotted key (`a."b.c".d`) into its parts."""
    parts: list[str] = []
    for m in re.finditer(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*(?:\.|$)', text):
        part = m.group(1)
        parts.append(part[1:-1] if part[:1] in "\"'" else part)
    return parts


def _value_tail(text: str) -> tuple[int, str | None]:
    """Bracket depth change and an unterminated multi-line string opener in a value."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            break
        if text.startswith(('"""', "'''"), i):
            quote = text[i : i + 3]
            end = text.find(quote, i + 3)
            if end < 0:
                return depth, quote
            i = end + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if c == '"' and text[j] == "\\" else 1
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


class KeyLines:
    """Line numbers of tables and keys in TOML source, keyed like `devices.allow[1].vid`."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        self._scan(text)

    def _record(self, key: str, line: int) -> None:
        self._lines.setdefault(key, line)

    def _scan(self, text: str) -> None:
        table = ""
        counts: dict[str, int] = {}
        open_ml: str | None = None
        depth = 0
        for lineno, raw in enumerate(text.splitlines(), 1):
            if open_ml is not None:
                end = raw.find(open_ml)
                if end < 0:
                    continue
                open_ml = None
                delta, open_ml = _value_tail(raw[end + 3 :])
                depth += delta
                continue
            if depth > 0:
                delta, open_ml = _value_tail(raw)
                depth += delta
                continue
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if m := re.match(r"\[\[\s*(.+?)\s*\]\]", line):
                path = ".".join(_split_dotted(m.group(1)))
                index = counts.get(path, 0)
                counts[path] = index + 1
                table = f"{path}[{index}]"
                self._record(path, lineno)
                self._record(table, lineno)
                continue
            if m := re.match(r"\[\s*(.+?)\s*\]", line):
                table = ".".join(_split_dotted(m.group(1)))
                self._record(table, lineno)
                continue
            key_text, eq, value = _split_assignment(line)
            if not eq:
                continue
            key = ".".join(_split_dotted(key_text))
            self._record(f"{table}.{key}" if table else key, lineno)
            delta, open_ml = _value_tail(value)
            depth = max(delta, 0)

    def find(self, key: str) -> int | None:
        """The line of `key`, else of its nearest enclosing table or key that is present."""
        while key:
            if key in self._lines:
                return self._lines[key]
            key = _parent_key(key)
        return None


def _split_assignment(line: str) -> tuple[str, bool, str]:
    quote: str | None = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return line[:i], True, line[i + 1 :]
    return line, False, ""


def _parent_key(key: str) -> str:
    m = re.match(r"(.*)(\[\d+\]|\.[^.\[\]]*)$", key)
    return m.group(1) if m else ""


# --------------------------------------------------------------------------- conversion


class _Bad:
    """Marker for a value that failed validation (its issue is already recorded)."""


_BAD = _Bad()


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != len(get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return "date/time"
    return type(value).__name__


def describe_type(tp: Any) -> str:
    """A human name for a model type, as used in messages and the reference."""
    optional, inner = _is_optional(tp)
    if optional:
        return f'{describe_type(inner)} or "none"'
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(f'"{a}"' for a in get_args(tp))
    if origin is list:
        (elem,) = get_args(tp)
        if dataclasses.is_dataclass(elem):
            return "array of tables"
        return f"array of {describe_type(elem)}s"
    if origin is dict:
        _, elem = get_args(tp)
        return "table of strings" if elem is str else f"table of {describe_type(elem)}"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return "table"
    raise TypeError(f"unsupported settings type {tp!r}")


def _short(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class _Problem:
    key: str
    message: str
    file: str | None = None  # another file than the config (holiday list...)
    line: int | None = None  # a line in that other file


class _Converter:
    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[_Problem] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(_Problem(key, message))

    def build(self, cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
        hints = get_type_hints(cls, vars(model))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        ok = True
        for name in data:
            if name not in fields:
                hint = get_close_matches(name, fields, n=1)
                extra = f' (did you mean "{hint[0]}"?)' if hint else ""
                self.error(prefix + name, f"unknown key{extra}")
                ok = False
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            key = prefix + name
            tp = hints[name]
            if name not in data:
                if dataclasses.is_dataclass(tp):
                    data_value: Any = {}
                elif f.metadata.get("required") or (
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                ):
                    self.error(key, "required key is missing")
                    ok = False
                    continue
                else:
                    continue
            else:
                data_value = data[name]
            value = self.convert(tp, data_value, key, f.metadata)
            if value is _BAD:
                ok = False
            else:
                kwargs[name] = value
        return cls(**kwargs) if ok else _BAD

    def convert(self, tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        result = self._convert(tp, value, key, meta)
        check = FIELD_CHECKS.get(re.sub(r"\[\d+\]", "[]", key))
        if check is not None and result is not _BAD and result is not None:
            message = check(result)
            if message:
                self.error(key, message)
                return _BAD
        return result

    def _convert(self, tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        optional, inner = _is_optional(tp)
        if optional:
            if value == UNSET:
                return None
            if isinstance(value, str) and inner in (int, float, bool):
                return self._wrong(key, value, describe_type(tp))
            return self._convert(inner, value, key, meta)
        origin = get_origin(tp)
        if origin is Literal:
            choices = get_args(tp)
            if any(type(value) is type(c) and value == c for c in choices):
                return value
            return self._wrong(key, value, "one of " + ", ".join(f'"{c}"' for c in choices))
        if origin is list:
            (elem,) = get_args(tp)
            if not isinstance(value, list):
                return self._wrong(key, value, describe_type(tp))
            items = []
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(elem):
                    if not isinstance(item, dict):
                        items.append(self._wrong(f"{key}[{i}]", item, "table"))
                        continue
                    items.append(self.build(elem, item, f"{key}[{i}]."))  # type: ignore[arg-type]
                else:
                    items.append(self.convert(elem, item, f"{key}[{i}]", {}))
            return _BAD if any(v is _BAD for v in items) else items
        if origin is dict:
            _, elem = get_args(tp)
            if not isinstance(value, dict):
                return self._wrong(key, value, "table")
            out = {k: self.convert(elem, v, f"{key}.{k}", {}) for k, v in value.items()}
            return _BAD if any(v is _BAD for v in out.values()) else out
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                return self._wrong(key, value, "table")
            return self.build(tp, value, key + ".")  # type: ignore[arg-type]
        if tp is bool:
            return value if isinstance(value, bool) else self._wrong(key, value, "boolean")
        if tp is str:
            return value if isinstance(value, str) else self._wrong(key, value, "string")
        if tp is Path:
            if not isinstance(value, str) or not value:
                return self._wrong(key, value, "path (a non-empty string)")
            path = Path(value)
            # normpath: show /etc/x rather than /etc/dock-agent/../x in messages and logs
            return path if path.is_absolute() else Path(os.path.normpath(self.base_dir / path))
        if tp in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return self._wrong(key, value, describe_type(tp))
            if tp is int and not isinstance(value, int):
                return self._wrong(key, value, "integer")
            if not math.isfinite(value):
                self.error(key, f"must be a finite number, got {value}")
                return _BAD
            lo, hi = meta.get("min"), meta.get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                self.error(key, f"{value} is out of range ({_range_text(lo, hi)})")
                return _BAD
            return float(value) if tp is float else value
        raise TypeError(f"unsupported settings type {tp!r} for {key}")

    def _wrong(self, key: str, value: Any, expected: str) -> _Bad:
        self.error(key, f"expected {expected}, got {_toml_type(value)} {_short(value)}")
        return _BAD


def _range_text(lo: float | None, hi: float | None) -> str:
    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    if lo is not None and hi is not None:
        return f"allowed {num(lo)}..{num(hi)}"
    if lo is not None:
        return f"minimum {num(lo)}"
    return f"maximum {num(hi)}" if hi is not None else "any"


# --------------------------------------------------------------------------- semantic checks


def read_date_file(path: Path) -> frozenset[dt.date]:
    """Read a holiday/workday list: one YYYY-MM-DD per line, `#` comments, blank lines.

    Raises `ConfigInvalid` with one line-numbered issue per bad line.
    """
    dates, problems = _parse_date_file(path)
    if problems:
        raise ConfigInvalid([ConfigIssue(str(path), line, "", msg) for line, msg in problems])
    return dates


def _parse_date_file(path: Path) -> tuple[frozenset[dt.date], list[tuple[int | None, str]]]:
    try:
        text = read_input_file(path, "date list", max_bytes=MAX_CONFIG_BYTES).decode("utf-8")
    except InputFileError as exc:
        return frozenset(), [(None, f"cannot read date list: {exc.reason}")]
    except UnicodeDecodeError as exc:
        return frozenset(), [(None, f"cannot read date list: {_os_reason(exc)}")]
    dates: set[dt.date] = set()
    problems: list[tuple[int | None, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry):
            problems.append((lineno, f"expected a date YYYY-MM-DD, got {_short(entry)}"))
            continue
        try:
            dates.add(dt.date.fromisoformat(entry))
        except ValueError as exc:
            problems.append((lineno, f"{entry} is not a valid date ({exc})"))
    return frozenset(dates), problems


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _check_readable_file(
    conv: _Converter, key: str, path: Path, what: str, *, min_bytes: int = 1,
    secret: bool = False,
) -> None:
    """A regular file (never a FIFO or device), not empty; a secret also private."""
    try:
        data = read_input_file(path, what, max_bytes=MAX_SECRET_BYTES, secret=secret).strip()
    except InputFileError as exc:
        conv.error(key, str(exc))
        return
    if not data:
        conv.error(key, f"{what} {path} is empty")
    elif len(data) < min_bytes:
        conv.error(key, f"{what} {path} is shorter than {min_bytes} bytes")


def needs_fleet_secret(devices: DeviceSettings) -> bool:
    """Recorders with a serial control port authenticate with the fleet secret."""
    if devices.source == "sim":
        return True
    return any(not d.storage_only for d in devices.allow)


def _check_dock_id(value: str) -> str | None:
    if _DOCK_ID.fullmatch(value):
        return None
    return ("must be 1-64 characters A-Z a-z 0-9 . _ - starting with a letter or digit "
            "(it is part of MQTT topics)")


def _check_timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f'unknown time zone "{value}" (use an IANA name such as "Asia/Shanghai")'
    return None


def _check_hex4(value: str) -> str | None:
    return None if _HEX4.fullmatch(value) else f"expected 4 hex digits, got {_short(value)}"


def _check_regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    return None


def _check_officer_pattern(value: str) -> str | None:
    problem = _check_regex(value)
    if problem is None and value and "officer" not in re.compile(value).groupindex:
        return "the regular expression needs a group named `officer`: (?P<officer>...)"
    return problem


def _check_footage_dir(value: str) -> str | None:
    p = Path(value)
    if not value or p.is_absolute() or ".." in p.parts:
        return f"must be a path relative to the recorder's root, got {_short(value)}"
    return None


def _check_topic_prefix(value: str) -> str | None:
    if not value or value.startswith("/") or value.endswith("/") or any(
        c in value for c in "+#\0"
    ):
        return "must be non-empty, without leading or trailing '/' and without + or #"
    return None


# Checks of single values, by dotted key (`[]` stands for any list index).
FIELD_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "dock.id": _check_dock_id,
    "dock.timezone": _check_timezone,
    "devices.allow[].vid": _check_hex4,
    "devices.allow[].pid": _check_hex4,
    "devices.allow[].serial_pattern": _check_regex,
    "recorder.officer_in_name": _check_officer_pattern,
    "offload.footage_dirs[]": _check_footage_dir,
    "mqtt.topic_prefix": _check_topic_prefix,
}


def _check_devices(conv: _Converter, devices: DeviceSettings) -> None:
    for i, d in enumerate(devices.allow):
        if d.storage_only and not devices.allow_storage_only:
            conv.error(f"devices.allow[{i}].storage_only", "storage-only recorders are "
                       "refused while devices.allow_storage_only = false")
    if devices.source == "udev" and not devices.allow:
        conv.error("devices.allow", "no recorders are allowed: add at least one "
                   "[[devices.allow]] entry (vid, pid)")
    seen: dict[str, str] = {}
    for port, label in devices.bays.items():
        if not port or not label.strip():
            conv.error(f"devices.bays.{port}", "port path and bay label must be non-empty")
            continue
        try:
            BayMap({port: label})  # the device source's own parser of port keys
        except DeviceConfigError as exc:
            conv.error(f"devices.bays.{port}", str(exc))
            continue
        if label in seen:
            conv.error(f"devices.bays.{port}",
                       f'bay label "{label}" is already used for port "{seen[label]}"')
        else:
            seen[label] = port


def _check_deadline(conv: _Converter, deadline: DeadlineSettings, check_files: bool) -> None:
    if (deadline.hours is None) == (deadline.working_days is None):
        conv.error("deadline", "set exactly one of hours and working_days "
                   '(write hours = "none" to use working_days)')
    for name in ("holiday_file", "workday_file"):
        path = getattr(deadline, name)
        if path is None:
            continue
        if deadline.working_days is None:
            conv.error(f"deadline.{name}", "only meaningful with deadline.working_days")
        if check_files:
            _, problems = _parse_date_file(path)
            for line, msg in problems:
                conv.problems.append(_Problem(f"deadline.{name}", msg, str(path), line))


def _check_readiness(conv: _Converter, readiness: ReadinessSettings) -> None:
    if (readiness.min_free_gb is None) == (readiness.min_free_hours is None):
        conv.error("readiness", "set exactly one of min_free_gb and min_free_hours "
                   '(write min_free_gb = "none" to use min_free_hours)')


def _check_mqtt(conv: _Converter, mqtt: MqttSettings, check_files: bool) -> None:
    if mqtt.backoff_min_s > mqtt.backoff_max_s:
        conv.error("mqtt.backoff_min_s", "must not exceed mqtt.backoff_max_s")
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        conv.error("mqtt.cert_file", "cert_file and key_file go together")
    if mqtt.password_file is not None and mqtt.username is None:
        conv.error("mqtt.password_file", "a password needs mqtt.username")
    if not (mqtt.enabled and check_files):
        return
    files = [("password_file", "password file", True)]
    if mqtt.tls:
        files += [("ca_file", "CA certificate", False), ("cert_file", "client certificate", False),
                  ("key_file", "client key", True)]
    for name, what, secret in files:
        path = getattr(mqtt, name)
        if path is not None:
            _check_readable_file(conv, f"mqtt.{name}", path, what, secret=secret)


def _check_upload(conv: _Converter, upload: UploadSettings, check_files: bool) -> None:
    if upload.backoff_min_s > upload.backoff_max_s:
        conv.error("upload.backoff_min_s", "must not exceed upload.backoff_max_s")
    if not upload.enabled:
        return
    if not re.fullmatch(r"https?://[^/\s]+/?", upload.endpoint):
        conv.error("upload.endpoint", "must be http(s)://host[:port]")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", upload.bucket):
        conv.error("upload.bucket", "must be a valid bucket name (3-63 of a-z 0-9 . -)")
    if upload.prefix.startswith("/") or "//" in upload.prefix or ".." in upload.prefix:
        conv.error("upload.prefix", "must be relative, without '//' or '..'")
    if check_files:
        from agent.upload.credentials import load_credentials
        from agent.upload.errors import CredentialsError

        try:
            load_credentials(upload.credentials_file)
        except CredentialsError as exc:
            conv.error("upload.credentials_file", str(exc))
        if upload.ca_file is not None:
            _check_readable_file(conv, "upload.ca_file", upload.ca_file, "CA certificate")


def _check_sections(conv: _Converter, sections: dict[str, Any], check_files: bool) -> None:
    """Rules across fields and sections, for the sections that were built."""
    devices: DeviceSettings | None = sections.get("devices")
    if devices is not None:
        _check_devices(conv, devices)
    if "deadline" in sections:
        _check_deadline(conv, sections["deadline"], check_files)
    if "readiness" in sections:
        _check_readiness(conv, sections["readiness"])
    if "mqtt" in sections:
        _check_mqtt(conv, sections["mqtt"], check_files)
    if "upload" in sections:
        _check_upload(conv, sections["upload"], check_files)
    retention = sections.get("retention")
    if retention is not None and retention.target_free_percent < retention.pressure_free_percent:
        conv.error("retention.target_free_percent", "must be at least pressure_free_percent")
    upload = sections.get("upload")
    if retention is not None and upload is not None and retention.purge and not upload.enabled:
        conv.error("retention.purge", "purging needs [upload] enabled: only footage the "
                   "object store has acknowledged may leave the dock")
    offload = sections.get("offload")
    if offload is not None and not offload.footage_dirs:
        conv.error("offload.footage_dirs", "at least one footage directory is needed")
    if offload is not None:
        _check_footage_overlap(conv, offload.footage_dirs)
    dock = sections.get("dock")
    if dock is not None:
        _check_dock_paths(conv, dock, check_files)
    mount = sections.get("mount")
    if mount is not None and devices is not None and mount.method == "directory" \
            and devices.source == "udev":
        conv.error("mount.method", 'udev recorders present block devices; "directory" '
                   'works only with devices.source = "sim"')
    recorder = sections.get("recorder")
    if recorder is not None and devices is not None and check_files \
            and needs_fleet_secret(devices):
        _check_readable_file(conv, "recorder.fleet_secret_file", recorder.fleet_secret_file,
                             "fleet secret", min_bytes=FLEET_SECRET_MIN_BYTES, secret=True)


def _check_footage_overlap(conv: _Converter, dirs: Sequence[str]) -> None:
    """Each recorder file must be reached through one footage directory only: a nested
    or repeated directory would offload (and later wipe) the same file twice."""
    parts = [Path(os.path.normpath(d)).parts for d in dirs]
    parts = [() if p == (".",) else p for p in parts]
    for j, later in enumerate(parts):
        for i in range(j):
            earlier = parts[i]
            n = min(len(earlier), len(later))
            if earlier[:n] != later[:n]:
                continue
            if earlier == later:
                how = "repeats"
            elif len(earlier) < len(later):
                how = "lies inside"
            else:
                how = "contains"
            conv.error(f"offload.footage_dirs[{j}]",
                       f"{_short(dirs[j])} {how} footage directory {_short(dirs[i])} "
                       f"(footage_dirs[{i}]); footage directories must not overlap")


def _check_dock_paths(conv: _Converter, dock: model.DockSettings, check_files: bool) -> None:
    """Directories the agent creates and chmods must not be symlinks (the mode would land
    on the target); an explicit signing key that exists must be private."""
    if not check_files:
        return
    for name in ("state_dir", "store_dir", "runtime_dir"):
        path: Path = getattr(dock, name)
        if path.is_symlink():
            conv.error(f"dock.{name}", f"{path} is a symlink; give the real directory")
        elif path.exists() and not path.is_dir():
            conv.error(f"dock.{name}", f"{path} exists and is not a directory")
    if dock.key_file is not None and dock.key_file.exists():
        try:
            read_input_file(dock.key_file, "signing key", max_bytes=MAX_SECRET_BYTES,
                            secret=True, group_ok=False)
        except InputFileError as exc:
            conv.error("dock.key_file", str(exc))


def _apply_alternatives(sections: dict[str, Any], raw: Mapping[str, Any]) -> None:
    for section, first, second in ALTERNATIVES:
        obj = sections.get(section)
        given = raw.get(section, {})
        if obj is None or not isinstance(given, dict):
            continue
        if given.get(second, UNSET) != UNSET and first not in given:
            sections[section] = dataclasses.replace(obj, **{first: None})


# --------------------------------------------------------------------------- public loading


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse `section.key=VALUE` items (VALUE is a TOML value; bare words are strings)."""
    out: list[tuple[str, Any]] = []
    for item in overrides:
        key, eq, text = item.partition("=")
        parts = _split_dotted(key.strip())
        if not eq or len(parts) < 2 or ".".join(parts) != key.strip().replace('"', ""):
            raise ConfigInvalid([ConfigIssue("--set", None, key.strip(),
                                             "expected section.key=VALUE")])
        try:
            value: Any = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out.append((".".join(parts), value))
    return out


def parse_settings(
    text: str,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    overrides: Iterable[str] = (),
    check_files: bool = True,
) -> Settings:
    """Validate TOML text and build `Settings`; raises `ConfigInvalid` listing every issue."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(m.group(1)) if m else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigInvalid([ConfigIssue(source, line, "", f"TOML syntax error: {message}")]) \
            from None
    overridden: set[str] = set()
    for key, value in parse_overrides(overrides):
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigInvalid([ConfigIssue("--set", None, key, f"{part} is not a table")])
        node[last] = value
        overridden.add(key)

    conv = _Converter(base_dir if base_dir is not None else Path.cwd())
    sections: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    hints = get_type_hints(Settings, vars(model))
    for name in raw:
        if name not in fields:
            hint = get_close_matches(name, fields, n=1)
            extra = f' (did you mean "{hint[0]}"?)' if hint else ""
            conv.error(name, f"unknown section{extra}")
    for name in fields:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            conv.error(name, f"expected a table [{name}], got {_toml_type(value)}")
            continue
        built = conv.build(hints[name], value, name + ".")
        if built is not _BAD:
            sections[name] = built
    _apply_alternatives(sections, raw)
    _check_sections(conv, sections, check_files)

    if conv.problems:
        lines = KeyLines(text)
        issues = []
        for p in conv.problems:
            if p.file is not None:
                issues.append(ConfigIssue(p.file, p.line, p.key, p.message))
            elif any(p.key == k or p.key.startswith((k + ".", k + "[")) for k in overridden):
                issues.append(ConfigIssue("--set", None, p.key, p.message))
            else:
                issues.append(ConfigIssue(source, lines.find(p.key), p.key, p.message))
        in_config = sorted((i for i in issues if i.file == source), key=lambda i: i.line or 0)
        raise ConfigInvalid(in_config + [i for i in issues if i.file != source])
    return Settings(**sections)


def load_settings(
    path: Path, *, overrides: Iterable[str] = (), check_files: bool = True
) -> Settings:
    """Read, validate and build the settings from a TOML file (see `parse_settings`)."""
    try:
        data = read_input_file(path, "config file", max_bytes=MAX_CONFIG_BYTES)
    except InputFileError as exc:
        raise ConfigInvalid(
            [ConfigIssue(str(path), None, "", f"cannot read config file: {exc.reason}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigInvalid(
            [ConfigIssue(str(path), line, "", "config file is not valid UTF-8")]
        ) from None
    return parse_settings(text, source=str(path), base_dir=path.absolute().parent,
                          overrides=overrides, check_files=check_files)


def summary(settings: Settings) -> str:
    """One line describing a valid configuration (for --check-config)."""
    s = settings
    if s.mqtt.enabled:
        mqtt = f"mqtt {s.mqtt.host}:{s.mqtt.port} {'tls' if s.mqtt.tls else 'plain'}"
    else:
        mqtt = "mqtt off"
    if s.deadline.hours is not None:
        deadline = f"deadline {s.deadline.hours:g} h"
    else:
        deadline = f"deadline {s.deadline.working_days} working days"
    return (f"dock {s.dock.id}: devices {s.devices.source} ({len(s.devices.allow)} allowed), "
            f"mount {s.mount.method}, {mqtt}, {deadline}, store {s.dock.store_dir}")


# --------------------------------------------------------------------------- derived artefacts


def iter_fields(cls: type[Any] = Settings, prefix: str = "") -> Iterator[
    tuple[str, dataclasses.Field[Any], Any]
]:
    """Every leaf setting as (dotted key, field, type); `devices.allow` items as `allow[].x`."""
    hints = get_type_hints(cls, vars(model))
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key + ".")  # type: ignore[arg-type]
            continue
        yield key, f, tp
        if get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            yield from iter_fields(get_args(tp)[0], key + "[].")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _type_schema(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    optional, inner = _is_optional(tp)
    if optional:
        return {"anyOf": [_type_schema(inner, meta), {"const": UNSET}]}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is list:
        return {"type": "array", "items": _type_schema(get_args(tp)[0], {})}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(tp)[1], {})}
    if dataclasses.is_dataclass(tp):
        return _class_schema(tp)  # type: ignore[arg-type]
    if tp is bool:
        return {"type": "boolean"}
    if tp is str:
        return {"type": "string"}
    if tp is Path:
        return {"type": "string", "minLength": 1}
    if tp in (int, float):
        out: dict[str, Any] = {"type": "integer" if tp is int else "number"}
        if "min" in meta:
            out["minimum"] = meta["min"]
        if "max" in meta:
            out["maximum"] = meta["max"]
        return out
    raise TypeError(f"unsupported settings type {tp!r}")


def _class_schema(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls, vars(model))
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        schema = _type_schema(hints[f.name], f.metadata)
        if "help" in f.metadata:
            schema = {"description": f.metadata["help"], **schema}
        elif f.name in SECTION_HELP:
            schema = {"description": SECTION_HELP[f.name], **schema}
        default = _default(f)
        if f.metadata.get("required") or default is dataclasses.MISSING:
            required.append(f.name)
        elif default is not None and not dataclasses.is_dataclass(default):
            schema["default"] = _jsonable(default)
        props[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the config file, generated from the model.

    It checks structure, types and ranges; cross-field rules live in the loader only.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://dock-agent.invalid/dock-agent.schema.json",
        "title": "dock-agent configuration",
        "description": "Generated from agent/settings.py by scripts/gen-config; do not edit.",
        **_class_schema(Settings),
    }


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default_text(f: dataclasses.Field[Any]) -> str:
    default = _default(f)
    if f.metadata.get("required"):
        return "required"
    if default is None:
        return "none"
    if dataclasses.is_dataclass(default):
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, str | Path):
        return f'"{default}"'
    if isinstance(default, list | dict) and not default:
        return "[]" if isinstance(default, list) else "{}"
    return str(_jsonable(default)).replace("'", '"')


def reference_markdown() -> str:
    """The README's configuration reference table, generated from the model."""
    out: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(Settings)}
    for key, f, tp in iter_fields():
        section = key.split(".", 1)[0]
        if section in sections:
            sections.pop(section)
            out += ["", f"**[{section}]** — {SECTION_HELP[section]}", "",
                    "| key | type | default | description |", "|---|---|---|---|"]
        kind = describe_type(tp)
        if "min" in f.metadata or "max" in f.metadata:
            kind += f" ({_range_text(f.metadata.get('min'), f.metadata.get('max'))})"
        out.append(f"| `{key}` | {_md(kind)} | {_md(_default_text(f))} | "
                   f"{_md(f.metadata.get('help', ''))} |")
    return "\n".join(out[1:]) + "\n"


def udev_rules(devices: DeviceSettings, *, source: str = "the dock-agent config") -> str:
    """udev rules tagging the allowed recorders (by USB VID:PID) and only those.

    Their ttys get group dialout 0660 for the unprivileged agent, and their block devices
    are hidden from desktop automounters; the agent still checks serial patterns itself.
    """
    pairs = sorted({(d.vid.lower(), d.pid.lower()) for d in devices.allow})
    lines = [
        f"# dock-agent: recorders allowed by {source} ([[devices.allow]]).",
        "# Generated by `dock-agent --udev-rules`; regenerate after changing the allowlist.",
        'ACTION=="remove", GOTO="dock_agent_end"',
        'SUBSYSTEM!="usb|tty|block", GOTO="dock_agent_end"',
    ]
    lines += [f'ATTRS{{idVendor}}=="{v}", ATTRS{{idProduct}}=="{p}", GOTO="dock_agent_recorder"'
              for v, p in pairs]
    lines += [
        'GOTO="dock_agent_end"',
        'LABEL="dock_agent_recorder"',
        'ENV{DOCK_AGENT_RECORDER}="1"',
        'SUBSYSTEM=="tty", GROUP="dialout", MODE="0660"',
        'SUBSYSTEM=="block", ENV{UDISKS_IGNORE}="1", ENV{UDISKS_AUTO}="0"',
        'LABEL="dock_agent_end"',
    ]
    return "\n".join(lines) + "\n"



def load_config(path: Path) -> Settings:
    """Load the config for tools that only read paths from it (dockctl).

    Structure, types and rules are validated as for the agent, but the input files it
    names (fleet secret, TLS keys) are not opened: such tools may run as a user who cannot
    read them.
    """
    return load_settings(path, check_files=False)
