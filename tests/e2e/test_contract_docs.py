"""The doc examples' slots (contract_docs.py, pure): the message a slot picks never depends
on which of the scenario's recorders happened to publish first."""

from __future__ import annotations

import random
from typing import Any

from . import contract_docs as docs

OTHER = "BWC70005"  # the scenario's fifth recorder: released, finished, stale like the rest


def state(serial: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    body = {"serial": serial, "docked": True, "state": "released", "clock": {},
            "officer": {"officer_no": "1"}, "offload_result": {"outcome": "complete"},
            "readiness": {"verdict": "READY"}, **extra}
    return f"recorder/{serial}/state", body


def progress(serial: str, phase: str) -> tuple[str, dict[str, Any]]:
    return f"recorder/{serial}/progress", {"serial": serial, "phase": phase}


def event(stream: str, kind: str, recorder: str | None, **data: Any) -> tuple[str, Any]:
    return f"events/{stream}", {"payload": {"kind": kind, "recorder": recorder, "data": data}}


def stream_of(serial: str) -> list[tuple[str, Any]]:
    """One recorder's messages, in the order that recorder publishes them."""
    return [
        progress(serial, "copying"), progress(serial, "finished"),
        event("custody", "offloaded", serial),
        event("fault", "fault", serial, code="battery_failed"),
        state(serial),
        state(serial, readiness={"verdict": "CHARGING"}),
        event("fault", "fault_cleared", serial, code="officer_unassigned"),
        state(serial, stale=True),
        (f"recorder/{serial}/state", {"serial": serial, "docked": False}),
    ]


def interleave(streams: list[list[tuple[str, Any]]], seed: int) -> list[tuple[str, Any]]:
    """A random interleaving that keeps each recorder's own order (as the broker would)."""
    rng, queues, out = random.Random(seed), [list(s) for s in streams], []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


def test_recorder_examples_name_their_recorder_whatever_the_order() -> None:
    serials = [docs.READY_SERIAL, docs.UNASSIGNED_SERIAL, docs.CHARGING_SERIAL,
               docs.FAILING_SERIAL, OTHER]
    streams = [stream_of(s) for s in serials]
    want = {
        "state-birth": docs.READY_SERIAL, "state-charging": docs.CHARGING_SERIAL,
        "state-stale": docs.READY_SERIAL, "state-death": docs.UNASSIGNED_SERIAL,
        "progress-copying": docs.READY_SERIAL, "progress-finished": docs.READY_SERIAL,
        "event-custody": docs.READY_SERIAL, "event-fault": docs.FAILING_SERIAL,
        "event-fault-cleared": docs.UNASSIGNED_SERIAL,
    }
    picks = []
    for seed in range(40):
        got = docs.pick_examples(interleave(streams, seed))
        shown = {slot: got[slot].get("serial") or got[slot]["payload"]["recorder"]
                 for slot in want}
        assert shown == want, (seed, shown)
        picks.append({slot: got[slot] for slot in want})
    assert all(p == picks[0] for p in picks)
