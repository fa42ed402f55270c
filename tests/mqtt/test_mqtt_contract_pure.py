"""The contract registry and the schemas agree, and every schema is strict: closed objects,
every field typed and described, closed vocabularies equal to the code's enums."""

from __future__ import annotations

from typing import Any

from agent.mqtt import contract
from agent.mqtt.command_processor import COMMANDS
from agent.mqtt.validation import load_schema, schema_names, validate


def walk(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every sub-schema (with a JSON-pointer-ish path)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    out += walk(sub, f"{path}/{key}/{name}")
            elif key in ("items", "not", "if", "then", "else"):
                out += walk(value, f"{path}/{key}")
            elif key in ("oneOf", "anyOf", "allOf"):
                for i, sub in enumerate(value):
                    out += walk(sub, f"{path}/{key}/{i}")
    return out


def test_registry_names_every_schema_once() -> None:
    assert sorted(s.schema for s in contract.TOPICS) == schema_names()
    assert {s.pattern[1] for s in contract.TOPICS if s.pattern[0] == "cmd"} == set(COMMANDS)


def test_every_object_is_closed_and_every_field_typed_and_described() -> None:
    problems = []
    for name in schema_names():
        for path, node in walk(load_schema(name)):
            if node.get("type") == "object" or (
                    isinstance(node.get("type"), list) and "object" in node["type"]):
                if "properties" in node and node.get("additionalProperties") is not False:
                    problems.append(f"{name} {path}: object not closed")
            segments = path.split("/")
            conditional = {"allOf", "anyOf", "if", "then", "else", "not"} & set(segments)
            if len(segments) >= 2 and segments[-2] == "properties" and not conditional:
                typed = any(k in node for k in ("type", "enum", "const", "oneOf"))
                if not typed:
                    problems.append(f"{name} {path}: untyped")
                if not node.get("description"):
                    problems.append(f"{name} {path}: undescribed")
    assert problems == []


def enum_at(schema: dict[str, Any], *path: str) -> list[str]:
    node: Any = schema
    for p in path:
        node = node[int(p)] if isinstance(node, list) else node[p]
    return sorted(node["enum"])


def test_closed_vocabularies_equal_the_code() -> None:
    custody = load_schema("event-custody")
    assert enum_at(custody, "properties", "payload", "properties", "kind") == list(
        contract.CUSTODY_KINDS)
    fault = load_schema("event-fault")
    assert enum_at(fault, "properties", "payload", "properties", "kind") == list(
        contract.FAULT_ENTRY_KINDS)
    assert enum_at(fault, "properties", "payload", "properties", "data", "properties",
                   "code") == list(contract.FAULT_CODES)
    state = load_schema("recorder-state")
    assert enum_at(state, "oneOf", "0", "properties", "faults", "items") == list(
        contract.FAULT_CODES)


def test_health_sample_is_one_definition() -> None:
    retained = load_schema("health")["properties"]["health"]
    event = load_schema("event-health")["properties"]["payload"]["properties"]["health"]
    assert retained == event


def test_health_upload_object_is_sent_only_with_upload_enabled() -> None:
    """The monitor adds `upload` only with [upload] enabled; the payload builder carries it
    (exactly its documented fields) and the strict schemas accept both forms."""
    from agent.mqtt import payloads
    from agent.store.outbox import OutboxStats

    from .helpers import health_sample

    upload = {"backlog_files": 2, "backlog_bytes": 2048, "oldest_backlog_age_s": 3.5,
              "uploaded_files": 7, "conflicts": 0, "last_error": None}
    stats = OutboxStats(0, None, 0)
    with_upload: dict[str, Any] = payloads.health(
        "d1", 1, 1.0e9, "1.0", health_sample(upload=upload), stats, {})
    assert with_upload["health"]["upload"] == upload
    without: dict[str, Any] = payloads.health("d1", 1, 1.0e9, "1.0", health_sample(), stats, {})
    assert "upload" not in without["health"]
    for body in (with_upload, without):  # (events/health carries the same definition)
        validate("health", body)


def test_no_schema_gives_a_key_twice() -> None:
    for name in schema_names():
        load_schema(name)  # raises on a duplicate key (the last one would silently win)
