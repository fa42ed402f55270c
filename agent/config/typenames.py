"""The settings model's types as the loader walks them, and how types and values read in
messages and in the generated reference."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from agent import settings as model

UNSET = "none"  # the string that unsets an optional setting


def model_hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved field types of a settings class (its annotations are strings)."""
    return get_type_hints(cls, vars(model))


def is_optional(tp: Any) -> tuple[bool, Any]:
    """Whether `tp` is `X | None`, and X (else `tp` itself)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) != len(get_args(tp)) and len(args) == 1:
            return True, args[0]
    return False, tp


def toml_type(value: Any) -> str:
    """The TOML name of the type of a parsed value."""
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
    optional, inner = is_optional(tp)
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


def short(value: Any) -> str:
    """A value as TOML-like text, cut to 40 characters, for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def range_text(lo: float | None, hi: float | None) -> str:
    """A numeric range as the reference and the range errors spell it."""

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    if lo is not None and hi is not None:
        return f"allowed {num(lo)}..{num(hi)}"
    if lo is not None:
        return f"minimum {num(lo)}"
    return f"maximum {num(hi)}" if hi is not None else "any"
