"""The examples in docs/mqtt.md validate against the schemas they name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent.mqtt.validation import schema_names, validate

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def test_doc_examples_validate():
    text = DOC.read_text()
    blocks = re.findall(r"```json schema=([\w-]+)\n(.*?)```", text, re.S)
    assert len(blocks) >= 10
    for name, body in blocks:
        validate(name, json.loads(body))


def test_every_schema_is_documented():
    text = DOC.read_text()
    for name in schema_names():
        if name.startswith("command-"):
            assert f"`{name.removeprefix('command-')}`" in text
        else:
            assert f"{name}.json" in text or f"schema={name}" in text, name
