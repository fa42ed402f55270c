"""Assertions shared by the end-to-end tests: what the central side must have received."""

from __future__ import annotations

from typing import Any

from tests.mqtt.central import Central

from .harness import Rig

PREFIX = "dock/v1"


def ledger_events(central: Central) -> list[dict[str, Any]]:
    """Ledger entries received over MQTT (custody + fault streams), de-duplicated by event
    id, in first-arrival order; each item is the event envelope."""
    seen: set[str] = set()
    out = []
    for m in central.messages:
        if not (m.topic.endswith("/events/custody") or m.topic.endswith("/events/fault")):
            continue
        if m.body["event_id"] in seen:
            continue
        seen.add(m.body["event_id"])
        out.append(m.body)
    return out


def received_seqs(central: Central) -> list[int]:
    return [int(e["payload"]["seq"]) for e in ledger_events(central)]


def all_ledger_delivered(rig: Rig, central: Central) -> bool:
    rows = rig.query("SELECT max(seq) FROM ledger")
    top = rows[0][0] if rows else None
    return top is not None and set(received_seqs(central)) >= set(range(1, top + 1))


def check_ledger_delivered(rig: Rig, central: Central) -> None:
    """Every ledger entry arrived exactly as recorded; seq contiguous from 1, no gaps, and
    in order per stream; every payload validated against its schema."""
    assert not central.invalid, central.invalid
    ledger = {r["seq"]: r for r in rig.ledger()}
    events = ledger_events(central)
    seqs = [int(e["payload"]["seq"]) for e in events]
    assert sorted(seqs) == list(range(1, max(ledger) + 1)), "gaps or duplicates in seq"
    for stream in ("custody", "fault"):
        s = [int(e["payload"]["seq"]) for e in events if e["stream"] == stream]
        assert s == sorted(s), f"{stream} events out of order: {s}"
    for e in events:
        p = e["payload"]
        row = ledger[p["seq"]]
        assert (p["hash"], p["kind"], p["recorder"]) == (row["hash"], row["kind"],
                                                         row["recorder"])
        assert e["event_id"] == row["hash"]
    # Outbox envelope seqs never repeat for distinct events.
    env = [int(e["seq"]) for e in events]
    assert len(set(env)) == len(env)


def retained_state(central: Central, serial: str) -> list[Any]:
    return central.on(f"/recorder/{serial}/state")


def status_bodies(central: Central) -> list[Any]:
    return central.on("/status")
