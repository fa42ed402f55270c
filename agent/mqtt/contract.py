"""The dock↔central contract in one place: every topic, its schema, retain flag and QoS.

Everything that names a topic's schema derives from `TOPICS` (validation, the contract
test, the docs check). A new topic joins the contract by adding one `TopicSpec` here and
its JSON Schema under `agent/mqtt/schemas/`; the contract test then requires that the full
scenario publishes it and that every message on it validates.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store.faults import FaultCode
from agent.store.ledger import FAULT_KINDS, EntryKind


@dataclass(frozen=True, slots=True)
class TopicSpec:
    pattern: tuple[str, ...]  # levels after `<prefix>/<dock_id>/`; "+" matches one level
    schema: str  # file name (without .json) in agent/mqtt/schemas/
    retained: bool
    qos: int
    direction: str = "dock"  # "dock": the dock publishes; "central": the central side does

    def matches(self, levels: list[str] | tuple[str, ...]) -> bool:
        return len(levels) == len(self.pattern) and all(
            p == "+" or p == level for p, level in zip(self.pattern, levels, strict=True))

    @property
    def display(self) -> str:
        return "/".join("<serial>" if p == "+" and i == 1 and self.pattern[0] == "recorder"
                        else ("<name>" if p == "+" else p) for i, p in enumerate(self.pattern))


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(("status",), "status", retained=True, qos=1),
    TopicSpec(("health",), "health", retained=True, qos=1),
    TopicSpec(("checkpoint",), "checkpoint", retained=True, qos=1),
    TopicSpec(("recorder", "+", "state"), "recorder-state", retained=True, qos=1),
    TopicSpec(("recorder", "+", "progress"), "recorder-progress", retained=False, qos=0),
    TopicSpec(("events", "custody"), "event-custody", retained=False, qos=1),
    TopicSpec(("events", "fault"), "event-fault", retained=False, qos=1),
    TopicSpec(("events", "health"), "event-health", retained=False, qos=1),
    TopicSpec(("reply", "+"), "reply", retained=False, qos=1),
    *(TopicSpec(("cmd", name), f"command-{name}", retained=False, qos=1, direction="central")
      for name in ("rebirth", "readiness", "assign-officer", "set-hold", "clear-hold",
                   "verify", "resend", "ack-upload", "tag", "export", "preserve", "audit",
                   "set-firmware-policy", "stage-firmware")),
)

# Closed vocabularies the schemas enumerate (kept equal by tests/mqtt/test_mqtt_contract_pure).
CUSTODY_KINDS: tuple[str, ...] = tuple(sorted(k.value for k in EntryKind
                                              if k not in FAULT_KINDS))
FAULT_ENTRY_KINDS: tuple[str, ...] = tuple(sorted(k.value for k in FAULT_KINDS))
FAULT_CODES: tuple[str, ...] = tuple(sorted(c.value for c in FaultCode))


def spec_for(levels: list[str] | tuple[str, ...]) -> TopicSpec | None:
    """The contract entry of a topic below `<prefix>/<dock_id>/` (given as its levels)."""
    for spec in TOPICS:
        if spec.matches(levels):
            return spec
    return None
