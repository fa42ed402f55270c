"""docs/mqtt.md examples, taken from the traffic the contract test captures.

Each example block in the doc is written as

    ```json example=<slot> schema=<schema>

and `SLOTS` says which captured message fills it. The contract test checks every block
against its slot's capture (same fields at every level, same types, same values of the
vocabulary fields), and rewrites the blocks from the capture when DOCK_UPDATE_MQTT_DOCS=1:

    DOCK_UPDATE_MQTT_DOCS=1 .venv/bin/pytest tests/e2e/test_e2e_contract.py -n 0
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"
BLOCK_RE = re.compile(r"```json example=([\w-]+) schema=([\w-]+)\n(.*?)```", re.S)
# Values that are vocabulary rather than data: an example must show the same one.
VOCABULARY = frozenset({"kind", "stream", "state", "phase", "verdict", "code", "command",
                        "reason", "outcome", "docked", "ok", "stale", "action", "severity"})

Pick = Callable[[str, Any], bool]  # (topic after the dock id, body) -> wanted


@dataclass(frozen=True)
class Slot:
    name: str
    schema: str
    pick: Pick


def _on(topic: str, **want: Any) -> Pick:
    def pick(t: str, body: Any) -> bool:
        if not re.fullmatch(topic, t) or not isinstance(body, dict):
            return False
        return all(_get(body, k) == v for k, v in want.items())
    return pick


def _get(body: dict[str, Any], dotted: str) -> Any:
    node: Any = body
    for part in dotted.split("__"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


# The scenario's recorders (tests/e2e/test_e2e_contract.py): every recorder example names
# the recorder it shows, so no example depends on which bay releases, finishes or is marked
# stale first. READY is the 96 % recorder with an officer; CHARGING the one at 40 % that
# charges far too slowly to reach 60 % within the scenario, however loaded the machine.
READY_SERIAL, UNASSIGNED_SERIAL, CHARGING_SERIAL, FAILING_SERIAL = (
    "BWC70001", "BWC70002", "BWC70003", "BWC70004")


def _recorder(serial: str, leaf: str) -> str:
    return rf"recorder/{serial}/{leaf}"


SLOTS: tuple[Slot, ...] = (
    Slot("status-online", "status", _on("status", state="online")),
    Slot("status-shutdown", "status", _on("status", state="offline", reason="shutdown")),
    Slot("status-will", "status", _on("status", state="offline", reason="connection-lost")),
    Slot("health", "health", _on("health")),
    Slot("checkpoint", "checkpoint", lambda t, b: _on("checkpoint")(t, b)
         and bool(b.get("previous"))),
    Slot("state-birth", "recorder-state",
         lambda t, b: _on(_recorder(READY_SERIAL, "state"), docked=True, state="released",
                          readiness__verdict="READY")(t, b)
         and "offload_result" in b and "clock" in b and b.get("officer") is not None
         and not b.get("stale")),
    Slot("state-charging", "recorder-state",
         _on(_recorder(CHARGING_SERIAL, "state"), readiness__verdict="CHARGING",
             state="released")),
    Slot("state-stale", "recorder-state", _on(_recorder(READY_SERIAL, "state"), stale=True)),
    Slot("state-death", "recorder-state", _on(_recorder(UNASSIGNED_SERIAL, "state"),
                                              docked=False)),
    Slot("progress-copying", "recorder-progress",
         _on(_recorder(READY_SERIAL, "progress"), phase="copying")),
    Slot("progress-finished", "recorder-progress",
         _on(_recorder(READY_SERIAL, "progress"), phase="finished")),
    Slot("event-custody", "event-custody", _on("events/custody", payload__kind="offloaded",
                                               payload__recorder=READY_SERIAL)),
    Slot("event-fault", "event-fault", _on("events/fault", payload__kind="fault",
                                           payload__data__code="battery_failed",
                                           payload__recorder=FAILING_SERIAL)),
    Slot("event-fault-cleared", "event-fault", _on("events/fault",
                                                   payload__kind="fault_cleared",
                                                   payload__recorder=UNASSIGNED_SERIAL)),
    Slot("event-health", "event-health", _on("events/health")),
    Slot("cmd-assign-officer", "command-assign-officer", _on("cmd/assign-officer")),
    Slot("cmd-set-hold", "command-set-hold", _on("cmd/set-hold")),
    Slot("cmd-resend", "command-resend", _on("cmd/resend")),
    Slot("cmd-tag", "command-tag", _on("cmd/tag")),
    Slot("cmd-export", "command-export", _on("cmd/export")),
    Slot("cmd-preserve", "command-preserve", _on("cmd/preserve")),
    Slot("cmd-audit", "command-audit", _on("cmd/audit")),
    Slot("cmd-ack-upload", "command-ack-upload", _on("cmd/ack-upload")),
    Slot("reply-assign-officer", "reply", _on(r"reply/assign-officer", ok=True)),
    Slot("reply-pending", "reply", lambda t, b: _on(r"reply/assign-officer", ok=True)(t, b)
         and b["result"]["pending"] is True),
    Slot("reply-invalid", "reply", _on(r"reply/.*", ok=False, error__code="invalid-args")),
    Slot("reply-resend", "reply", _on(r"reply/resend", ok=True)),
    Slot("reply-tag", "reply", _on(r"reply/tag", ok=True)),
    Slot("reply-export", "reply", _on(r"reply/export", ok=True)),
    Slot("reply-audit", "reply", _on(r"reply/audit", ok=True)),
)


def pick_examples(captured: list[tuple[str, Any]]) -> dict[str, Any]:
    """slot -> the first captured body that fills it (topics relative to the dock)."""
    out: dict[str, Any] = {}
    for slot in SLOTS:
        for topic, body in captured:
            if body is not None and slot.pick(topic, body):
                out[slot.name] = body
                break
    return out


def doc_blocks(text: str) -> list[tuple[str, str, Any]]:
    return [(slot, schema, json.loads(body)) for slot, schema, body in BLOCK_RE.findall(text)]


def mismatches(doc: Any, real: Any, where: str = "") -> list[str]:
    """How a doc example differs in shape from the real message (null matches any type:
    many fields are null only sometimes)."""
    if doc is None or real is None:
        return []
    if isinstance(real, dict):
        if not isinstance(doc, dict):
            return [f"{where or '/'}: object expected"]
        out = [f"{where}/{k}: missing in the doc" for k in real.keys() - doc.keys()]
        out += [f"{where}/{k}: not sent by the dock" for k in doc.keys() - real.keys()]
        for k in real.keys() & doc.keys():
            if k in VOCABULARY and _identifier(real[k]) and doc[k] != real[k]:
                out.append(f"{where}/{k}: {doc[k]!r} but the dock sent {real[k]!r}")
            out += mismatches(doc[k], real[k], f"{where}/{k}")
        return out
    if isinstance(real, list):
        if not isinstance(doc, list):
            return [f"{where}: array expected"]
        if real and doc:
            return mismatches(doc[0], real[0], f"{where}/0")
        return []
    if isinstance(real, bool) or isinstance(doc, bool):
        return [] if type(real) is type(doc) else [f"{where}: {type(real).__name__} expected"]
    if isinstance(real, int | float) and isinstance(doc, int | float):
        return []
    return [] if type(real) is type(doc) else [f"{where}: {type(real).__name__} expected"]


def _identifier(value: Any) -> bool:
    """A vocabulary value (`shutdown`, `READY`, True), not free text such as a reason."""
    return isinstance(value, bool) or (
        isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", value) is not None)


def render(body: Any) -> str:
    return json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rewrite(text: str, examples: dict[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        slot, schema = m.group(1), m.group(2)
        body = examples.get(slot)
        if body is None:
            return m.group(0)
        return f"```json example={slot} schema={schema}\n{render(body)}```"

    return BLOCK_RE.sub(sub, text)
