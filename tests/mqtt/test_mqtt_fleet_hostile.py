"""One dock publishing garbage under its own prefix (which the ACL allows it) must not take
down `dockctl fleet` for everyone: each message is validated on its own, the bad dock is
shown as such, and every other dock is still shown. Through a real broker and the real
`dockctl fleet` command."""

from __future__ import annotations

import asyncio
import json
import sys

from agent.mqtt import payloads
from agent.mqtt.transport import PahoTransport
from agent.store.db import Database

from .broker import Broker
from .conftest import RecordingActions
from .helpers import make_reporter, rec_state, running

B = "dock/v1/dock-B"

RAW: list[tuple[str, bytes]] = [
    (f"{B}/status", b'{"dock_id": "dock-B", "state": "online", "bdSeq": "abc"}'),
    (f"{B}/health", b'{"dock_id": "dock-B", "time": T, "bdSeq": 1,'
                    b' "health": {}, "outbox": "x"}'),
    (f"{B}/recorder/R1/state", b'{"dock_id": "dock-B", "serial": "R1", "docked": true,'
                               b' "time": T, "bdSeq": 1, "battery": {"percent": "full"}}'),
    (f"{B}/recorder/R2/state", b'{"dock_id": "dock-B", "serial": "R2", "docked": true,'
                               b' "time": T, "bdSeq": 1, "officer": ["0042"]}'),
    (f"{B}/recorder/R3/state", b'{"dock_id": "dock-A", "serial": "R3", "docked": true,'
                               b' "time": T, "bdSeq": 1}'),  # claims to be another dock
    (f"{B}/recorder/R4/state", b'{"dock_id": "dock-B", "serial": "REC00001", "docked": true,'
                               b' "time": T, "bdSeq": 1}'),  # another recorder's serial
    (f"{B}/recorder/R5/state", b"[" * 100_000),
    (f"{B}/recorder/R6/state", b'{"dock_id": "dock-B", "serial": "R6", "docked": true,'
                               b' "time": T, "bdSeq": NaN}'),
    (f"{B}/recorder/R7/state", b'{"dock_id": "dock-B", "serial": "R7", "docked": true,'
                               b' "time": T, "bdSeq": ' + b"9" * 5000 + b"}"),
    (f"{B}/recorder/R8/state", b"\xff\xfe not utf-8"),
    (f"{B}/recorder/R9/state", b'"just a string"'),
    (f"{B}/recorder/R10/state", b'{"dock_id": "dock-B", "serial": "R10", "docked": true,'
                                b' "time": T, "bdSeq": 1, "bdSeq": 2}'),
    (f"{B}/recorder/R11/progress", b'{"dock_id": "dock-B", "serial": "R11", "time": T,'
                                   b' "files_done": "x"}'),
    (f"{B}/recorder/R12/state", b'{"dock_id": "dock-B", "serial": "R12", "docked": true,'
                                b' "time": T, "bdSeq": 1, "readiness": {"verdict": 7}}'),
]
# (T stands for a valid time, so that each message breaks only what it means to break.)
HOSTILE = [(t, p.replace(b"T,", b'"2026-11-23T08:00:00Z",')) for t, p in RAW]
# Valid by the schema, but carrying terminal control sequences: shown, escaped.
ESCAPES = (f"{B}/recorder/R13/state", payloads.encode(payloads.recorder_birth(
    "dock-B", "R13", 0, 1_795_420_800.0, rec_state(
        "\x1b[2J\x1b]0;owned\x07", verdict="NOT_READY",
        reasons=[("officer_unassigned", "line\nFAULT dock-A forged")]))))


async def dockctl_fleet(broker: Broker, *args: str) -> tuple[int, str, str]:
    s = broker.settings("central")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.dockctl.cli", "fleet", "--broker",
        f"{s.host}:{s.port}", "--tls", "--ca-file", str(s.ca_file), "--cert-file",
        str(s.cert_file), "--key-file", str(s.key_file), "--once", "--wait", "1", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_dock_publishing_garbage_does_not_hide_the_fleet(
        broker: Broker, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    reporter.set_recorder_state("REC00001", rec_state("1"))
    hostile = PahoTransport(broker.settings("dock-B"), "dock-B")
    await hostile.connect()
    try:
        for topic, payload in [*HOSTILE, ESCAPES]:
            await hostile.publish(topic, payload, retain=True)
    finally:
        await hostile.disconnect()

    async with running(reporter):
        code, out, err = await dockctl_fleet(broker, "--json")
        assert code == 0, err
        snap = json.loads(out)
        docks = {d["dock_id"]: d for d in snap["docks"]}
        a = docks["dock-A"]
        assert a["online"] and a["invalid_messages"] == 0, a["last_invalid"]
        (rec,) = a["recorders"]
        assert rec["serial"] == "REC00001" and rec["readiness"] == "READY"
        b = docks["dock-B"]
        assert b["invalid_messages"] == len(HOSTILE), b
        assert b["last_invalid"]["topic"].startswith(B)
        assert not b["online"]  # its only status message was refused
        assert [r["serial"] for r in b["recorders"]] == ["R13"]

        code, table, err = await dockctl_fleet(broker)
        assert code == 0, err
    assert "dock-A" in table and "REC00001" in table and "READY" in table
    assert f"INVALID dock-B {len(HOSTILE)} message(s) refused" in table
    assert "\x1b" not in table and "\x07" not in table
    assert not any(line.startswith("FAULT dock-A") for line in table.splitlines())
