"""Conversion of parsed TOML into the settings dataclasses, walking the model's type hints.

A new setting needs no code here. Every problem is recorded as a `Problem` (dotted key and
message) and conversion goes on, so one run reports all of them; a value that failed is
the `BAD` marker and the object that would contain it is not built.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from agent.config.field_checks import FIELD_CHECKS
from agent.config.typenames import (
    UNSET,
    describe_type,
    is_optional,
    model_hints,
    range_text,
    short,
    toml_type,
)


class Bad:
    """Marker for a value that failed validation (its issue is already recorded)."""


BAD = Bad()
_MISSING = object()  # a key that is absent and has nothing to build


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found while converting or checking (see `load` for how it is placed)."""

    key: str
    message: str
    file: str | None = None  # another file than the config (holiday list...)
    line: int | None = None  # a line in that other file


def unknown_name_hint(name: str, known: Mapping[str, object]) -> str:
    """` (did you mean "x"?)` for a misspelt key or section, else the empty string."""
    hint = get_close_matches(name, known, n=1)
    return f' (did you mean "{hint[0]}"?)' if hint else ""


class Converter:
    """Builds settings objects from parsed TOML, collecting every problem."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir  # relative paths are relative to the config's directory
        self.problems: list[Problem] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def build(self, cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
        """An instance of the dataclass `cls` from a TOML table, or `BAD`."""
        hints = model_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        ok = True
        for name in data:
            if name not in fields:
                self.error(prefix + name, "unknown key" + unknown_name_hint(name, fields))
                ok = False
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            value = self._field(f, hints[name], data, prefix + name)
            if value is BAD:
                ok = False
            elif value is not _MISSING:
                kwargs[name] = value
        return cls(**kwargs) if ok else BAD

    def _field(self, f: dataclasses.Field[Any], tp: Any, data: Mapping[str, Any],
               key: str) -> Any:
        """One field's value; `_MISSING` leaves it to its default."""
        if f.name in data:
            return self.convert(tp, data[f.name], key, f.metadata)
        if dataclasses.is_dataclass(tp):  # an absent section or sub-table: all defaults
            return self.convert(tp, {}, key, f.metadata)
        if f.metadata.get("required") or (
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ):
            self.error(key, "required key is missing")
            return BAD
        return _MISSING

    def convert(self, tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        """`value` converted to the model type `tp`, then checked by its field check."""
        result = self._convert(tp, value, key, meta)
        check = FIELD_CHECKS.get(re.sub(r"\[\d+\]", "[]", key))
        if check is not None and result is not BAD and result is not None:
            message = check(result)
            if message:
                self.error(key, message)
                return BAD
        return result

    def _convert(self, tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        optional, inner = is_optional(tp)
        if optional:
            return self._optional(tp, inner, value, key, meta)
        origin = get_origin(tp)
        if origin is Literal:
            return self._literal(get_args(tp), value, key)
        if origin is list:
            return self._list(tp, value, key)
        if origin is dict:
            return self._dict(get_args(tp)[1], value, key)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                return self._wrong(key, value, "table")
            return self.build(tp, value, key + ".")  # type: ignore[arg-type]
        if tp is bool:
            return value if isinstance(value, bool) else self._wrong(key, value, "boolean")
        if tp is str:
            return value if isinstance(value, str) else self._wrong(key, value, "string")
        if tp is Path:
            return self._path(value, key)
        if tp in (int, float):
            return self._number(tp, value, key, meta)
        raise TypeError(f"unsupported settings type {tp!r} for {key}")

    def _optional(self, tp: Any, inner: Any, value: Any, key: str,
                  meta: Mapping[str, Any]) -> Any:
        if value == UNSET:
            return None
        if isinstance(value, str) and inner in (int, float, bool):
            return self._wrong(key, value, describe_type(tp))
        return self._convert(inner, value, key, meta)

    def _literal(self, choices: tuple[Any, ...], value: Any, key: str) -> Any:
        if any(type(value) is type(c) and value == c for c in choices):
            return value
        return self._wrong(key, value, "one of " + ", ".join(f'"{c}"' for c in choices))

    def _list(self, tp: Any, value: Any, key: str) -> Any:
        (elem,) = get_args(tp)
        if not isinstance(value, list):
            return self._wrong(key, value, describe_type(tp))
        items = []
        for i, item in enumerate(value):
            if not dataclasses.is_dataclass(elem):
                items.append(self.convert(elem, item, f"{key}[{i}]", {}))
            elif isinstance(item, dict):
                items.append(self.build(elem, item, f"{key}[{i}]."))  # type: ignore[arg-type]
            else:
                items.append(self._wrong(f"{key}[{i}]", item, "table"))
        return BAD if any(v is BAD for v in items) else items

    def _dict(self, elem: Any, value: Any, key: str) -> Any:
        if not isinstance(value, dict):
            return self._wrong(key, value, "table")
        out = {k: self.convert(elem, v, f"{key}.{k}", {}) for k, v in value.items()}
        return BAD if any(v is BAD for v in out.values()) else out

    def _path(self, value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value:
            return self._wrong(key, value, "path (a non-empty string)")
        path = Path(value)
        # normpath: show /etc/x rather than /etc/dock-agent/../x in messages and logs
        return path if path.is_absolute() else Path(os.path.normpath(self.base_dir / path))

    def _number(self, tp: type[Any], value: Any, key: str, meta: Mapping[str, Any]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self._wrong(key, value, describe_type(tp))
        if tp is int and not isinstance(value, int):
            return self._wrong(key, value, "integer")
        if not math.isfinite(value):
            self.error(key, f"must be a finite number, got {value}")
            return BAD
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.error(key, f"{value} is out of range ({range_text(lo, hi)})")
            return BAD
        return float(value) if tp is float else value

    def _wrong(self, key: str, value: Any, expected: str) -> Bad:
        self.error(key, f"expected {expected}, got {toml_type(value)} {short(value)}")
        return BAD
