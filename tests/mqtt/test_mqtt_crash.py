"""The agent process dies (kill -9) with events published but not yet acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.mqtt import SCHEMAS
from agent.settings import MqttSettings
from agent.store.db import Database

from .broker import Broker
from .central import Central
from .helpers import add_custody, until

ROOT = Path(__file__).resolve().parents[2]


async def start_agent(db_path: Path, settings: MqttSettings) -> asyncio.subprocess.Process:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.mqtt.agent_proc", str(db_path), json.dumps(cfg),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    assert line.startswith(b"online"), line
    return proc


def waiting_ids(db_path: Path) -> set[str]:
    conn = sqlite3.connect(db_path)
    try:
        return {r[0] for r in conn.execute("SELECT event_id FROM outbox")}
    finally:
        conn.close()


@pytest.mark.timeout(600)
async def test_kill_between_publish_and_puback_resends_same_event_id(
        broker: Broker, central: Central, db_path: Path) -> None:
    db = Database(db_path, SCHEMAS)
    await add_custody(db, 5000)
    db.close()
    settings = broker.settings("dock-A")
    proc = await start_agent(db_path, settings)
    # Freeze the agent mid-drain: publishes on the wire reach the broker and the central
    # side, but their PUBACKs pile up unread in the frozen process's socket.
    # Freeze it mid-drain until the central side holds events whose PUBACK the agent never
    # read (still in its outbox). Frozen at an instant with nothing on the wire, no such
    # event comes: let it run on a little and freeze it again.
    for threshold in range(4700, 0, -300):
        async with asyncio.timeout(120):
            while len(waiting_ids(db_path)) > threshold:
                await asyncio.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = waiting_ids(db_path)  # the frozen agent deletes no more rows

        def delivered_unacked(frozen: set[str] = frozen) -> set[str]:
            return {b["event_id"] for b in central.on("/events/custody")} & frozen

        try:
            await central.wait_for(lambda: bool(delivered_unacked()), timeout=15)
            break
        except TimeoutError:
            os.kill(proc.pid, signal.SIGCONT)
    else:
        pytest.fail("never caught an event delivered but not acknowledged")
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    unacked_seen = delivered_unacked() & waiting_ids(db_path)
    assert unacked_seen, "some delivered events were still waiting for their PUBACK"
    # The broker sends the Will with the first session's bdSeq.
    await central.wait_for(lambda: any(
        b["state"] == "offline" and b["reason"] == "connection-lost"
        for b in central.on("dock-A/status")))
    proc = await start_agent(db_path, settings)
    try:
        await central.wait_for(lambda: len(central.unique_events()) == 5000, timeout=180)
        await until(lambda: not waiting_ids(db_path), timeout=120)
    finally:
        proc.kill()
        await proc.wait()
    ids = [b["event_id"] for b in central.on("/events/custody")]
    duplicates = {i for i in ids if ids.count(i) > 1} if len(ids) < 20000 else set()
    assert unacked_seen <= duplicates, "each unacknowledged event was re-sent with its event_id"
    # De-duplication by event_id gives every event once, in seq order, without gaps.
    unique = central.unique_events()
    seqs = [e["seq"] for e in unique]
    assert sorted(seqs) == list(range(1, 5001))
    # Re-sent events carry the same seq as the first copy.
    by_id: dict[str, set[int]] = {}
    for b in central.on("/events/custody"):
        by_id.setdefault(b["event_id"], set()).add(b["seq"])
    assert all(len(s) == 1 for s in by_id.values())
    statuses = [(b["state"], b["bdSeq"]) for b in central.on("dock-A/status")]
    assert statuses[:3] == [("online", 1), ("offline", 1), ("online", 2)]
    assert central.invalid == []
