"""The README's configuration reference (Markdown tables), generated from the model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent.config.fields import SECTION_HELP, field_default, iter_fields, jsonable
from agent.config.relations import relations_markdown
from agent.config.typenames import describe_type, range_text
from agent.settings import Settings


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _default_text(f: dataclasses.Field[Any]) -> str:
    default = field_default(f)
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
    return str(jsonable(default)).replace("'", '"')


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
            kind += f" ({range_text(f.metadata.get('min'), f.metadata.get('max'))})"
        out.append(f"| `{key}` | {_md(kind)} | {_md(_default_text(f))} | "
                   f"{_md(f.metadata.get('help', ''))} |")
    return "\n".join(out[1:]) + "\n" + relations_markdown()
