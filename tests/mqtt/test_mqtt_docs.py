"""docs/mqtt.md: every example validates against the schema it names, and every schema and
command is documented. (That the examples are the agent's real messages is checked by the
contract test, tests/e2e/test_e2e_contract.py, which captures them.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent.mqtt import contract
from agent.mqtt.validation import schema_names, validate

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"
BLOCK_RE = re.compile(r"```json example=([\w-]+) schema=([\w-]+)\n(.*?)```", re.S)


def test_doc_examples_validate() -> None:
    text = DOC.read_text()
    blocks = BLOCK_RE.findall(text)
    assert len(blocks) >= 20
    assert "```json\n" not in text and "```json schema=" not in text, "example without a slot"
    for _slot, name, body in blocks:
        validate(name, json.loads(body))


def test_every_schema_topic_and_kind_is_documented() -> None:
    text = DOC.read_text()
    for name in schema_names():
        if name.startswith("command-"):
            assert f"`{name.removeprefix('command-')}`" in text, name
        else:
            assert f"{name}.json" in text, name
    for kind in contract.CUSTODY_KINDS:
        assert f"`{kind}`" in text, kind
