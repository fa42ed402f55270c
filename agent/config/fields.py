"""The settings model as the generators read it: section help, every leaf setting, and
defaults as JSON values."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

from agent.config.typenames import model_hints
from agent.settings import Settings

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


def iter_fields(cls: type[Any] = Settings, prefix: str = "") -> Iterator[
    tuple[str, dataclasses.Field[Any], Any]
]:
    """Every leaf setting as (dotted key, field, type); `devices.allow` items as `allow[].x`."""
    hints = model_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key + ".")  # type: ignore[arg-type]
            continue
        yield key, f, tp
        if get_origin(tp) is list and dataclasses.is_dataclass(get_args(tp)[0]):
            yield from iter_fields(get_args(tp)[0], key + "[].")


def field_default(f: dataclasses.Field[Any]) -> Any:
    """The field's default value (a fresh one for a factory), else `dataclasses.MISSING`."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def jsonable(value: Any) -> Any:
    """A default value as JSON: paths become strings."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
