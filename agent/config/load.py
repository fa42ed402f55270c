"""Loading: read the TOML file, apply `--set` overrides, convert, check, and report every
issue with its file, line and dotted key in one `ConfigInvalid`; no `Settings` object
exists unless the whole file is valid."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tomllib
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from agent.compliance.day_lists import read_day_list
from agent.config.convert import BAD, Converter, unknown_name_hint
from agent.config.errors import ConfigInvalid, ConfigIssue
from agent.config.positions import KeyLines, split_dotted
from agent.config.relations import check_relations
from agent.config.rules import apply_alternatives, check_sections
from agent.config.typenames import model_hints, toml_type
from agent.inputfiles import MAX_CONFIG_BYTES, InputFileError, read_input_file
from agent.settings import Settings

DEFAULT_CONFIG_PATH = Path("/etc/dock-agent/dock-agent.toml")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)")


def parse_overrides(overrides: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse `section.key=VALUE` items (VALUE is a TOML value; bare words are strings)."""
    out: list[tuple[str, Any]] = []
    for item in overrides:
        key, eq, text = item.partition("=")
        parts = split_dotted(key.strip())
        if not eq or len(parts) < 2 or ".".join(parts) != key.strip().replace('"', ""):
            raise ConfigInvalid([ConfigIssue("--set", None, key.strip(),
                                             "expected section.key=VALUE")])
        try:
            value: Any = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out.append((".".join(parts), value))
    return out


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POSITION.search(str(exc))
        line = int(m.group(1)) if m else None
        message = _TOML_POSITION.sub("", str(exc))
        raise ConfigInvalid([ConfigIssue(source, line, "", f"TOML syntax error: {message}")]) \
            from None


def _apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> set[str]:
    """Write `--set` values into the parsed TOML; the dotted keys that were set."""
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
    return overridden


def _build_sections(conv: Converter, raw: dict[str, Any]) -> dict[str, Any]:
    """Each section that converts without problems, by name."""
    sections: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    hints = model_hints(Settings)
    for name in raw:
        if name not in fields:
            conv.error(name, "unknown section" + unknown_name_hint(name, fields))
    for name in fields:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            conv.error(name, f"expected a table [{name}], got {toml_type(value)}")
            continue
        built = conv.build(hints[name], value, name + ".")
        if built is not BAD:
            sections[name] = built
    return sections


def _issues(conv: Converter, text: str, source: str,
            overridden: Collection[str]) -> list[ConfigIssue]:
    """The problems placed: in another file, on the command line, or at a config line;
    those in the config come first, in line order."""
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
    return in_config + [i for i in issues if i.file != source]


def parse_settings(
    text: str,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    overrides: Iterable[str] = (),
    check_files: bool = True,
) -> Settings:
    """Validate TOML text and build `Settings`; raises `ConfigInvalid` listing every issue."""
    raw = _parse_toml(text, source)
    overridden = _apply_overrides(raw, overrides)
    conv = Converter(base_dir if base_dir is not None else Path.cwd())
    sections = _build_sections(conv, raw)
    apply_alternatives(sections, raw)
    check_sections(conv, sections, check_files)
    check_relations(conv, sections, raw)  # settings that contradict each other
    if conv.problems:
        raise ConfigInvalid(_issues(conv, text, source, overridden))
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


def load_config(path: Path) -> Settings:
    """Load the config for tools that only read paths from it (dockctl).

    Structure, types and rules are validated as for the agent, but the input files it
    names (fleet secret, TLS keys) are not opened: such tools may run as a user who cannot
    read them.
    """
    return load_settings(path, check_files=False)


def read_date_file(path: Path) -> frozenset[dt.date]:
    """Read a holiday/workday list: one YYYY-MM-DD per line, `#` comments, blank lines.

    Raises `ConfigInvalid` with one line-numbered issue per bad line.
    """
    day_list = read_day_list(path)
    if day_list.problems:
        raise ConfigInvalid([ConfigIssue(str(path), p.line, "", p.message)
                             for p in day_list.problems])
    return day_list.days


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
