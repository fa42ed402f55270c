"""Hostile and malformed commands from the central side, sent through the real broker (TLS,
ACL) to the running agent: every one is answered with a schema-level refusal (never an
exception text), none changes anything, and the agent keeps answering. Retained commands
are never carried out again across agent restarts and reconnects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from agent.mqtt.validation import load_schema
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import DOCK_ID, RigFactory
from .harness import Rig, until

REPLY = f"dock/v1/{DOCK_ID}/reply/"

# A valid body per command; each hostile case breaks one thing in it.
VALID: dict[str, dict[str, Any]] = {
    "rebirth": {"id": "v", "args": {}, "sent_at": "2026-11-23T08:00:00Z"},
    "readiness": {"id": "v", "args": {}, "sent_at": "2026-11-23T08:00:00Z"},
    "verify": {"id": "v", "args": {"deep": False}, "sent_at": "2026-11-23T08:00:00Z"},
    "assign-officer": {"id": "v", "args": {"serial": "BWC90001", "officer_no": "9001",
                                           "officer_name": "A", "unit_no": "U",
                                           "unit_name": "N"}},
    "set-hold": {"id": "v", "args": {"hold_id": "h", "reason": "r", "scope": {
        "serial": "BWC90001", "officer_no": "9001", "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-02T00:00:00Z", "files": ["a"]}}},
    "clear-hold": {"id": "v", "args": {"hold_id": "h", "reason": "r"}},
}

WRONG: dict[str, list[Any]] = {
    "string": [1, 1.5, True, None, [], {}, ["s"]],
    "boolean": ["true", 1, 0, None, [], {}],
    "object": ["s", 1, True, None, [], [{}]],
    "array": ["s", 1, True, None, {}, [1], [None], [{}]],
}

EXCEPTION_WORDS = ("Traceback", "Error:", "Exception", "KeyError", "TypeError", "ValueError",
                   "RecursionError", "sqlite", "File \"")


def _fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                            str]]:
    """Every property path of a command schema with its JSON type."""
    out = []
    for name, sub in schema.get("properties", {}).items():
        kind = sub.get("type")
        if isinstance(kind, str):
            out.append(((*path, name), kind))
        if kind == "object":
            out.extend(_fields(sub, (*path, name)))
    return out


def _replace(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def wrong_type_cases() -> list[tuple[str, bytes, str]]:
    cases = []
    for name, valid in VALID.items():
        for path, kind in _fields(load_schema(f"command-{name}")):
            for value in WRONG[kind]:
                body = _replace(valid, path, value)
                code = "malformed" if path == ("id",) else "invalid-args"
                cases.append((name, json.dumps(body).encode(), code))
    return cases


MIB = 1024 * 1024
ENVELOPE_CASES: list[tuple[str, bytes, str, str]] = [
    # (command, payload, code, fragment of the message)
    ("verify", b"[" * 100_000, "malformed", "nested deeper"),
    ("verify", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "malformed", "nested deeper"),
    ("assign-officer", b'{"id": "big", "args": {"serial": "' + b"A" * (2 * MIB) + b'"}}',
     "malformed", "exceeds the limit"),
    ("assign-officer", b'{"id": "u8", "args": {"serial": "\xff\xfe", "officer_no": "1"}}',
     "malformed", "not UTF-8"),
    ("readiness", '{"id": "u16"}'.encode("utf-16"), "malformed", "not UTF-8"),
    ("readiness", b'\xef\xbb\xbf{"id": "bom"}', "malformed", "byte order mark"),
    ("readiness", b"", "malformed", "not JSON"),
    ("readiness", b"[]", "malformed", "not of type 'object'"),
    ("readiness", b'"readiness"', "malformed", "not of type 'object'"),
    ("readiness", b"42", "malformed", "not of type 'object'"),
    ("readiness", b"null", "malformed", "not of type 'object'"),
    ("verify", b'{"id": "nan", "args": {"deep": NaN}}', "malformed", "NaN"),
    ("verify", b'{"id": "inf", "args": {"deep": Infinity}}', "malformed", "Infinity"),
    ("verify", b'{"id": "ninf", "args": {"deep": -Infinity}}', "malformed", "Infinity"),
    ("verify", b'{"id": "huge", "args": {"deep": 1e999}}', "malformed", "out of range"),
    ("verify", b'{"id": "digits", "args": {"deep": ' + b"9" * 5000 + b"}}", "malformed",
     "out of range"),
    ("readiness", b'{"id": "dup-1", "id": "dup-2"}', "malformed", "duplicate key"),
    ("assign-officer", b'{"id": "dupargs", "args": {"serial": "BWC90001", "serial": "X",'
     b' "officer_no": "1"}}', "malformed", "duplicate key"),
    ("assign-officer", b'{"id": "sur", "args": {"serial": "\\ud800", "officer_no": "1"}}',
     "malformed", "surrogate"),
    ("assign-officer", b'{"id": "noargs"}', "invalid-args", "'args' is a required property"),
    ("set-hold", b'{"id": "noargs-h"}', "invalid-args", "'args' is a required property"),
    ("clear-hold", b'{"id": "noargs-c"}', "invalid-args", "'args' is a required property"),
    ("readiness", json.dumps({"id": "x" * 129}).encode(), "malformed", "id"),
    ("readiness", b'{"id": "a/b\\n"}', "malformed", "id"),
    ("readiness", b'{"id": 7}', "malformed", "id"),
    ("readiness", b'{"id": "stale-1", "sent_at": "2020-01-01T00:00:00Z"}', "rejected",
     "older than"),
]


async def _agent(make_rig: RigFactory, broker: Broker, central: Central) -> Rig:
    rig = make_rig(broker.settings(DOCK_ID))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(b and b.get("state") == "online" for b in central.on("/status")),
                "agent online", agent=rig.agent)
    return rig


def _changed(rig: Rig) -> list[Any]:
    return rig.query("SELECT kind FROM ledger WHERE kind NOT IN ('agent_started',"
                     " 'agent_stopped')") + rig.query("SELECT * FROM officer_assignments")


@pytest.mark.timeout(600)
async def test_every_malformed_command_gets_a_schema_level_refusal(
        make_rig: RigFactory, broker: Broker, central: Central) -> None:
    rig = await _agent(make_rig, broker, central)
    before = _changed(rig)
    cases = [(n, p, c, w) for n, p, c, w in ENVELOPE_CASES]
    cases += [(n, p, c, "") for n, p, c in wrong_type_cases()]
    assert len(cases) > 100

    # Each case asks for its reply on its own response topic (MQTT 5 request/response).
    for i, (name, payload, _code, _why) in enumerate(cases):
        await central.command(DOCK_ID, name, None, raw=payload, response_topic=f"{REPLY}h-{i}",
                              correlation=f"corr-{i}".encode())

    def answered() -> bool:
        got = {m.topic for m in central.messages}
        return all(f"{REPLY}h-{i}" in got for i in range(len(cases)))

    await until(answered, "a reply to every hostile command", agent=rig.agent, timeout=180)
    for i, (name, payload, code, why) in enumerate(cases):
        (msg,) = [m for m in central.messages if m.topic == f"{REPLY}h-{i}"]
        reply = msg.body
        where = f"case {i} {name} {payload[:80]!r}: {reply}"
        assert msg.correlation_data == f"corr-{i}".encode(), where
        assert reply["ok"] is False and reply["error"]["code"] == code, where
        assert reply["command"] == name, where
        assert why in reply["error"]["message"], where
        assert len(reply["error"]["message"]) <= 400, where
        assert not any(w in reply["error"]["message"] for w in EXCEPTION_WORDS), where
        if code == "malformed":
            assert reply["id"] is None, where

    # Envelope problems: the reply cannot go where it was asked for; it goes to the
    # command's default reply topic, refused, and the command is not carried out.
    ok_body = {"id": "env-1", "args": {"serial": "BWC90001", "officer_no": "9001"}}
    bad_targets = [
        f"{REPLY}#", f"{REPLY}+", f"{REPLY}a/b", f"{REPLY}", "dock/v1/dock-other/reply/x",
        "dock/v1/#", "central/inbox", f"{REPLY}{'x' * 200}",
    ]
    for i, target in enumerate(bad_targets):
        body = dict(ok_body, id=f"env-{i}")
        await central.command(DOCK_ID, "assign-officer", body, response_topic=target,
                              correlation=b"c")
    await central.command(DOCK_ID, "assign-officer", dict(ok_body, id="env-corr"),
                          response_topic=f"{REPLY}fine", correlation=b"x" * 1000)
    ids = [f"env-{i}" for i in range(len(bad_targets))]

    def refused() -> list[Any]:
        return [b for b in central.on("/reply/assign-officer") if b and b["id"] in ids]

    await until(lambda: len(refused()) >= len(ids), "refusals of bad response topics",
                agent=rig.agent)
    for reply in refused():
        assert reply["ok"] is False and reply["error"]["code"] == "malformed", reply
        assert "response topic" in reply["error"]["message"], reply
    # Oversized correlation data: refused on the (valid) response topic, not echoed.
    await until(lambda: bool(central.on("/reply/fine")), "refusal of the correlation data",
                agent=rig.agent)
    (fine,) = [m for m in central.messages if m.topic.endswith("/reply/fine")]
    assert fine.body["error"]["code"] == "malformed" and fine.correlation_data is None
    assert "correlation data" in fine.body["error"]["message"]

    # Command names that are no topic level of a reply, or no command at all.
    await central.command(DOCK_ID, "x" * 300, {"id": "long-name"})
    await central.command(DOCK_ID, "", {"id": "empty-name"})
    await until(lambda: len(central.on("/reply/invalid")) == 2, "replies to bad names",
                agent=rig.agent)
    assert {b["error"]["code"] for b in central.on("/reply/invalid")} == {"unknown-command"}

    # Nothing changed, the agent is alive and still answers, and nothing raised.
    assert _changed(rig) == before
    await central.command(DOCK_ID, "readiness", {"id": "still-here"})
    await until(lambda: any(b and b["id"] == "still-here" and b["ok"]
                            for b in central.on("/reply/readiness")), "a good command",
                agent=rig.agent)
    assert central.invalid == []
    log = rig.agent.log_text()
    assert "Traceback" not in log, rig.agent.log_tail(200)
    assert rig.agent.running()


@pytest.mark.timeout(600)  # five agent starts and a broker restart: slow on a loaded machine
async def test_a_retained_command_runs_at_most_once(
        make_rig: RigFactory, broker: Broker, central: Central) -> None:
    rig = await _agent(make_rig, broker, central)
    body = {"id": "kept-1", "args": {"serial": "BWC90002", "officer_no": "9002"}}

    def assignments() -> int:
        return len(rig.query("SELECT * FROM officer_assignments WHERE recorder = 'BWC90002'"))

    def ignored() -> int:
        return rig.agent.log_text().count("ignoring retained command")

    # Sent live (and retained by mistake): carried out once, answered once.
    await central.command(DOCK_ID, "assign-officer", body, retain=True)
    await until(lambda: len(central.on("/reply/assign-officer")) == 1, "the first reply",
                agent=rig.agent)
    assert central.on("/reply/assign-officer")[0]["ok"] is True
    assert assignments() == 1

    # The broker re-delivers it (retained) on every subscription: after a clean restart,
    # after kill -9, and after a broker restart. Each time it is logged and ignored.
    seen = ignored()
    for how in ("terminate", "kill9", "broker"):
        if how == "terminate":
            assert rig.agent.terminate() == 0
            rig.start_agent()
        elif how == "kill9":
            rig.agent.kill9()
            rig.start_agent()
        else:
            broker.restart()
            await central.reconnect()
        await until(lambda: ignored() > seen,  # awaited at once: seen is current
                    f"retained command ignored after {how}", agent=rig.agent)
        seen = ignored()
    # Its id is remembered, so even a live repeat does not run it again.
    await central.command(DOCK_ID, "assign-officer", body)
    await until(lambda: len(central.on("/reply/assign-officer")) == 2, "the repeat's reply",
                agent=rig.agent)
    first, second = central.on("/reply/assign-officer")
    assert first == second
    assert assignments() == 1

    # Retained while the agent is down (it replaces the retained kept-1): never carried out.
    rig.agent.kill9()
    await central.command(DOCK_ID, "assign-officer", {"id": "kept-2", "args": {
        "serial": "BWC90003", "officer_no": "9003"}}, retain=True)
    seen = ignored()
    rig.start_agent()
    await until(lambda: ignored() > seen, "the new retained command ignored",
                agent=rig.agent)
    await central.command(DOCK_ID, "readiness", {"id": "marker"})
    await until(lambda: bool(central.on("/reply/readiness")), "marker", agent=rig.agent)
    assert not rig.query("SELECT * FROM officer_assignments WHERE recorder = 'BWC90003'")
    assert assignments() == 1
    assert len(central.on("/reply/assign-officer")) == 2
