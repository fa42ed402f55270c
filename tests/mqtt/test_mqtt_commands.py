"""Commands from the central service, through a real broker and its ACL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.mqtt.errors import MqttError
from agent.mqtt.transport import PahoTransport
from agent.store.db import Database

from .broker import Broker, Pki
from .central import Central
from .conftest import RecordingActions
from .helpers import make_reporter, rec_state, running, until

REPLY = "dock/v1/dock-A/reply/"


def replies(central: Central, name: str) -> list[Any]:
    return central.on(f"/reply/{name}")


async def test_commands_run_once_per_id_and_answer(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        body = {"id": "c-1", "args": {"serial": "REC00001", "officer_no": "0042",
                                      "officer_name": "Wang"}}
        await central.command("dock-A", "assign-officer", body)
        await central.wait_for(lambda: len(replies(central, "assign-officer")) == 1)
        await central.command("dock-A", "assign-officer", body)  # a repeat: same id
        await central.wait_for(lambda: len(replies(central, "assign-officer")) == 2)
        first, second = replies(central, "assign-officer")
        assert first == second and first["ok"] and first["result"]["recorder"] == "REC00001"
        assert [c[0] for c in actions.calls] == ["assign_officer"]
        assert actions.officers == {"REC00001": {"officer_no": "0042", "officer_name": "Wang"}}

        await central.command("dock-A", "set-hold", {"id": "c-2", "args": {
            "hold_id": "H1", "reason": "case 2026-17", "scope": {"serial": "REC00001"}}})
        await central.command("dock-A", "verify", {"id": "c-3", "args": {"deep": True}})
        await central.command("dock-A", "readiness", {"id": "c-4"})
        await central.command("dock-A", "clear-hold", {"id": "c-5", "args": {
            "hold_id": "H1", "reason": "case closed"}})
        await central.wait_for(lambda: all(replies(central, n) for n in
                                           ("set-hold", "verify", "readiness", "clear-hold")))
        assert replies(central, "verify")[0]["result"]["deep"] is True
        assert replies(central, "readiness")[0]["result"]["recorders"][0]["verdict"] == "READY"
        assert actions.holds == {}

        # MQTT 5 request/response: the reply goes to the given topic with the correlation data.
        await central.command("dock-A", "readiness", {"id": "c-6"},
                              response_topic=REPLY + "req-77", correlation=b"corr-77")
        await central.wait_for(lambda: bool(central.on("/reply/req-77")))
        msg = next(m for m in central.messages if m.topic.endswith("/reply/req-77"))
        assert msg.correlation_data == b"corr-77" and msg.body["id"] == "c-6"

        # rebirth republishes the retained state
        reporter.set_recorder_state("REC00002", rec_state("2"))
        await central.wait_for(lambda: len(central.on("/recorder/REC00002/state")) == 1)
        await central.command("dock-A", "rebirth", {"id": "c-7"})
        await central.wait_for(lambda: len(central.on("/recorder/REC00002/state")) == 2)
        assert ("rebirth", None) in actions.calls
    assert central.invalid == []


@pytest.mark.parametrize(
    ("name", "raw", "code", "why"),
    [
        ("assign-officer", b"{not json", "malformed", "not JSON"),
        ("assign-officer", b'{"args": {"serial": "REC00001", "officer_no": "1"}}', "malformed",
         "'id' is a required property"),
        ("self-destruct", b'{"id": "x-1"}', "unknown-command", "unknown command"),
        ("assign-officer", b'{"id": "x-2", "args": {"serial": "REC00001"}}', "invalid-args",
         "'officer_no' is a required property"),
        ("verify", b'{"id": "x-3", "args": {"deep": "yes"}}', "invalid-args", "not of type"),
        ("set-hold", b'{"id": "x-4", "args": {"hold_id": "H", "reason": "r", "scope": {},'
         b' "extra": 1}}', "invalid-args", "should be non-empty"),
        ("assign-officer", b'{"id": "x-5", "args": {"serial": "NOPE0001", "officer_no": "7"}}',
         "rejected", "not known to this dock"),
        ("clear-hold", b'{"id": "x-6", "args": {"hold_id": "H9", "reason": "r"}}', "rejected",
         "no hold H9"),
    ],
)
async def test_bad_commands_get_a_reason_and_change_nothing(
        broker: Broker, central: Central, db: Database, actions: RecordingActions, name: str,
        raw: bytes, code: str, why: str) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    async with running(reporter):
        await central.command("dock-A", name, None, raw=raw)
        await central.wait_for(lambda: bool(replies(central, name)))
    reply = replies(central, name)[0]
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert why in reply["error"]["message"]
    assert actions.officers == {} and actions.holds == {}
    assert all(c[0] in ("assign_officer", "clear_hold") for c in actions.calls)
    assert central.invalid == []


async def test_acl_other_dock_cannot_command_or_impersonate(
        broker: Broker, central: Central, db: Database, actions: RecordingActions) -> None:
    reporter = make_reporter(db, broker.settings("dock-A"), actions)
    intruder = PahoTransport(broker.settings("dock-B"), "dock-B")
    async with running(reporter):
        await intruder.connect()
        # dock-B writes a command to dock-A and fake state/events as dock-A; the ACL drops all.
        cmd = json.dumps({"id": "evil-1", "args": {"serial": "REC00001",
                                                   "officer_no": "666"}}).encode()
        fake = json.dumps({"dock_id": "dock-A", "state": "offline", "bdSeq": 99}).encode()
        for topic, payload in [("dock/v1/dock-A/cmd/assign-officer", cmd),
                               ("dock/v1/dock-A/status", fake),
                               ("dock/v1/dock-A/events/custody", fake)]:
            try:
                await asyncio.wait_for(intruder.publish(topic, payload), 5)
            except MqttError:
                pass  # MQTT 5: refused with "not authorized"
        with pytest.raises(MqttError):
            await intruder.subscribe("dock/v1/dock-A/cmd/#")
        # A marker from the real dock, published after the intruder's attempts.
        await central.command("dock-A", "readiness", {"id": "marker"})
        await central.wait_for(lambda: bool(replies(central, "readiness")))
        await until(lambda: not reporter._tasks)  # every command that arrived is answered
        await intruder.disconnect()
    assert actions.officers == {}
    assert not any(b and b.get("bdSeq") == 99 for b in central.on("dock-A/status"))
    assert central.on("/events/custody") == []
    assert not replies(central, "assign-officer")


async def test_client_with_untrusted_certificate_is_refused(
        broker: Broker, pki: Pki, tmp_path: Path) -> None:
    from agent.mqtt.errors import ConnectFailed

    from .broker import Pki

    rogue = Pki.create(tmp_path / "rogue", ["dock-A"])  # a "dock-A" from another CA
    settings = broker.settings("dock-A", cert_file=rogue.cert("dock-A"),
                               key_file=rogue.key("dock-A"))
    with pytest.raises(ConnectFailed):
        await PahoTransport(settings, "dock-A").connect()


async def test_idempotency_survives_restart(
        broker: Broker, central: Central, db_path: Path, actions: RecordingActions) -> None:
    from agent.mqtt import SCHEMAS
    from agent.store.db import Database

    body = {"id": "persist-1", "args": {"hold_id": "H2", "reason": "r",
                                        "scope": {"officer_no": "0042"}}}
    for _ in range(2):
        db = Database(db_path, SCHEMAS)
        reporter = make_reporter(db, broker.settings("dock-A"), actions)
        n = len(replies(central, "set-hold"))
        async with running(reporter):
            await central.command("dock-A", "set-hold", body)
            await central.wait_for(lambda: len(replies(central, "set-hold")) == n + 1)
        db.close()
    a, b = replies(central, "set-hold")
    assert a == b and [c[0] for c in actions.calls] == ["set_hold"]
    await until(lambda: True)


@pytest.mark.timeout(600)  # 1,500 durable commits: slow on a loaded disk
async def test_command_ids_are_remembered_by_age_across_restarts(
        db_path: Path, actions: RecordingActions) -> None:
    """An executed id stays remembered for the documented window (REMEMBER_DAYS), however
    many other commands come in meanwhile, across restarts; a command sent longer ago than
    the window is refused as stale instead of running again."""
    from agent.mqtt import SCHEMAS
    from agent.mqtt.command_processor import REMEMBER_COMMANDS, REMEMBER_S, CommandProcessor
    from agent.store.db import Database

    now = [1_800_000_000.0]

    async def republish() -> None:
        return None

    def processor(db: Database) -> CommandProcessor:
        return CommandProcessor(db, "dock-A", actions, republish, clock=lambda: now[0])

    def body(cmd_id: str, sent_at: str | None = None) -> bytes:
        doc: dict[str, Any] = {"id": cmd_id, "args": {"serial": "REC00001", "officer_no": "0042"}}
        if sent_at is not None:
            doc["sent_at"] = sent_at
        return json.dumps(doc).encode()

    db = Database(db_path, SCHEMAS)
    first = await processor(db).handle("assign-officer", body("keep-me"))
    # Far more than the old count-based memory held, spread over most of the window.
    for i in range(REMEMBER_COMMANDS + 500):
        now[0] += (REMEMBER_S * 0.9) / (REMEMBER_COMMANDS + 500)
        await processor(db).handle("readiness", json.dumps({"id": f"other-{i}"}).encode())
    db.close()
    db = Database(db_path, SCHEMAS)  # a restart
    again = await processor(db).handle("assign-officer", body("keep-me"))
    assert again == first
    assert [c[0] for c in actions.calls].count("assign_officer") == 1

    # A command sent before the window began can no longer be matched to its id: refused.
    import datetime as dt

    old = dt.datetime.fromtimestamp(now[0] - REMEMBER_S - 3600, dt.UTC).isoformat()
    reply = json.loads(await processor(db).handle("assign-officer", body("late-1", old)))
    assert reply["ok"] is False and reply["error"]["code"] == "rejected"
    assert "older than" in reply["error"]["message"]
    assert [c[0] for c in actions.calls].count("assign_officer") == 1
    db.close()
