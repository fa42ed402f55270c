"""The JSON Schema of the config file, generated from the settings model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from agent.config.fields import SECTION_HELP, field_default, jsonable
from agent.config.typenames import UNSET, is_optional, model_hints
from agent.settings import Settings


def _number_schema(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer" if tp is int else "number"}
    if "min" in meta:
        out["minimum"] = meta["min"]
    if "max" in meta:
        out["maximum"] = meta["max"]
    return out


def _type_schema(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    optional, inner = is_optional(tp)
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
        return _number_schema(tp, meta)
    raise TypeError(f"unsupported settings type {tp!r}")


def _class_schema(cls: type[Any]) -> dict[str, Any]:
    hints = model_hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        schema = _type_schema(hints[f.name], f.metadata)
        if "help" in f.metadata:
            schema = {"description": f.metadata["help"], **schema}
        elif f.name in SECTION_HELP:
            schema = {"description": SECTION_HELP[f.name], **schema}
        default = field_default(f)
        if f.metadata.get("required") or default is dataclasses.MISSING:
            required.append(f.name)
        elif default is not None and not dataclasses.is_dataclass(default):
            schema["default"] = jsonable(default)
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
