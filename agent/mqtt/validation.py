"""Load the JSON Schemas shipped in `agent/mqtt/schemas/` and validate payloads."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from agent.mqtt.errors import PayloadInvalid

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

# jsonschema is imported on first use: it costs ~8 MB of memory, and a dock validates
# nothing until the first command arrives.


def schema_names() -> list[str]:
    root = resources.files("agent.mqtt.schemas")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("agent.mqtt.schemas").joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text, object_pairs_hook=_unique_keys)
    return schema


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice in a schema would silently keep only its last value (two merged
    edits of one schema once left a command's `args` optional)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"schema key {key!r} given twice")
        out[key] = value
    return out


@cache
def _validator(name: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


def validate(name: str, payload: object) -> None:
    """Raise PayloadInvalid naming the first problem when `payload` breaks schema `name`."""
    from jsonschema.exceptions import ValidationError

    try:
        error = next(iter(_validator(name).iter_errors(payload)), None)
    except ValidationError as exc:  # pragma: no cover - iter_errors does not raise
        error = exc
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise PayloadInvalid(f"{name}: at {where}: {error.message}")


def schema_for_topic(levels: list[str]) -> str | None:
    """Schema name for a topic below `<prefix>/<dock_id>/` (given as its levels), if any."""
    from agent.mqtt.contract import spec_for

    spec = spec_for(levels)
    return None if spec is None else spec.schema
