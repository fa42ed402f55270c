"""Custody verifiable away from the dock: a real agent offloads real recorders, `dockctl
ledger export` writes a bundle, and `dock-verify` passes it and names every kind of
tampering; the dock's signed checkpoints reach the central side retained over MQTT, and a
dock whose ledger was rolled back raises an alarm there."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.custody import verifier
from agent.custody.verify_cli import main as dock_verify
from agent.mqtt.fleet import FleetModel
from agent.mqtt.fleet_table import render_table
from agent.store import chain
from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec
from tests.mqtt.broker import Broker
from tests.mqtt.central import Central

from .conftest import RigFactory
from .harness import PYTHON, Rig, until


def spec(serial: str, seed: int) -> RecorderSpec:
    return RecorderSpec(serial, officer=OfficerRecord("1001001", "Li Wei", "U01", "Unit 1"),
                        footage=FootageSpec(count=2, size_bytes=1 * MIB, seed=seed))


async def offload(rig: Rig, *specs: RecorderSpec) -> None:
    for bay, s in enumerate(specs, start=1):
        await rig.plug(str(bay), s)
    for s in specs:
        await rig.wait_released(s.serial)


async def export(rig: Rig, out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = await rig.dockctl_json("ledger", "export", "--out", str(out))
    return summary


def run_verify(*args: str) -> tuple[int, str]:
    """The installed `dock-verify` console script in a fresh process, run from an empty
    directory as a third party would: no config, no database, no agent."""
    import subprocess
    import tempfile

    script = Path(PYTHON).parent / "dock-verify"
    assert script.exists(), "dock-verify is not installed (pyproject [project.scripts])"
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.run([str(script), *args], capture_output=True, text=True,
                              timeout=120, check=False, cwd=cwd,
                              env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"})
    return proc.returncode, proc.stdout + proc.stderr


def findings(bundle: dict[str, Any], fp: str, store: Path | None = None) -> set[str]:
    return verifier.verify_bundle(bundle, trusted_fingerprint=fp, store=store).kinds()


async def test_exported_bundle_verifies_and_every_tamper_is_named(
        make_rig: RigFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = make_rig()
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await offload(rig, spec("CUST0001", 41), spec("CUST0002", 42))
    out = tmp_path / "bundle.json"
    summary = await export(rig, out)
    fp = summary["fingerprint"]
    # the running agent signed its tail first: the bundle is covered up to its last entry
    assert summary["last_signed_seq"] == summary["last_seq"]
    assert fp == verifier.fingerprint(bytes.fromhex(
        json.loads(out.read_text())["public_key"]["key_id"]))

    # the battery history a supervisor reads is durable and per recorder
    battery = await rig.dockctl_json("battery", "CUST0001")
    assert battery["samples"] and battery["samples"][0]["health_percent"] is not None
    code, text = run_verify("--fingerprint", fp, str(out), str(rig.store_dir))
    assert code == 0, text
    assert "OK:" in text and "4 stored files re-hashed" in text
    code, text = run_verify("--key", str(rig.state_dir / "dock.key.pub"), str(out))
    assert code == 0, text

    bundle = json.loads(out.read_text())
    entries = bundle["entries"]
    offloaded = [i for i, e in enumerate(entries) if e["kind"] == "offloaded"]

    # altered entry
    b = copy.deepcopy(bundle)
    b["entries"][offloaded[0]]["data"]["size"] += 1
    assert "entry_altered" in findings(b, fp)
    # removed entry
    b = copy.deepcopy(bundle)
    del b["entries"][offloaded[1]]
    assert "entry_missing" in findings(b, fp)
    # reordered
    b = copy.deepcopy(bundle)
    i = offloaded[0]
    b["entries"][i], b["entries"][i + 1] = b["entries"][i + 1], b["entries"][i]
    assert "entries_reordered" in findings(b, fp)
    # truncated tail against the signed checkpoint
    b = copy.deepcopy(bundle)
    del b["entries"][-3:]
    assert "entries_truncated" in findings(b, fp)
    # bad signature
    b = copy.deepcopy(bundle)
    sig = b["checkpoints"][-1]["signature"]
    b["checkpoints"][-1]["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert "checkpoint_bad_signature" in findings(b, fp)
    # wrong key: the whole bundle re-signed by someone else's key
    forged = _resigned(bundle, Ed25519PrivateKey.generate())
    assert verifier.verify_bundle(forged).ok  # self-consistent: only pinning catches it
    assert "wrong_key" in findings(forged, fp)
    # an entry rewritten and the chain re-hashed after it: the checkpoint no longer matches
    b = _rechained(bundle, offloaded[0], lambda e: e["data"].update(blake3="0" * 64))
    assert "checkpoint_mismatch" in findings(b, fp)

    # a hostile bundle naming a path outside the store: named, never read
    b = copy.deepcopy(bundle)
    b["entries"][offloaded[0]]["data"]["stored_relpath"] = "../../etc/passwd"
    assert "unsafe_path" in findings(b, fp, rig.store_dir)

    # altered stored file (in a copy of the store)
    store = tmp_path / "store-copy"
    shutil.copytree(rig.store_dir, store)
    victim = store / entries[offloaded[0]]["data"]["stored_relpath"]
    victim.chmod(victim.stat().st_mode | stat.S_IWUSR)
    with victim.open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    gone = store / entries[offloaded[1]]["data"]["stored_relpath"]
    gone.unlink()
    (store / "planted.mp4").write_bytes(b"x")
    assert {"hash_mismatch", "missing_file", "extra_file"} <= findings(bundle, fp, store)

    # the command line names each one and exits 1
    tampered = tmp_path / "tampered.json"
    b = copy.deepcopy(bundle)
    b["entries"][offloaded[0]]["officer"] = "9999999"
    tampered.write_text(json.dumps(b))
    assert dock_verify(["--fingerprint", fp, str(tampered), str(store)]) == 1
    text = capsys.readouterr().out
    for kind in ("entry_altered", "hash_mismatch", "missing_file", "extra_file"):
        assert f"PROBLEM {kind} at " in text, text
    assert dock_verify([str(tmp_path / "nope.json")]) == 2
    hostile = tmp_path / "deep.json"
    hostile.write_text("[" * 100000 + "]" * 100000)
    assert dock_verify([str(hostile)]) == 2  # named, not a traceback
    hostile.write_text(json.dumps({**bundle, "dock_id": "dock\x1b[2J"}))
    assert dock_verify([str(hostile)]) == 1
    assert "\x1b" not in capsys.readouterr().out  # controls from a bundle are escaped
    rig.agent.terminate()


def _resign(b: dict[str, Any], key: Ed25519PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    b["public_key"] = {"key_id": raw.hex(), "fingerprint": verifier.fingerprint(raw),
                       "pem": pub.public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo
                                               ).decode()}
    by_seq = {e["seq"]: e for e in b["entries"]}
    for cp in b["checkpoints"]:
        cp["key_id"] = raw.hex()
        cp["hash"] = by_seq[cp["seq"]]["hash"]
        cp["signature"] = key.sign(chain.checkpoint_message(
            cp["dock_id"], cp["seq"], cp["hash"], cp["time_us"])).hex()


def _resigned(bundle: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    b = copy.deepcopy(bundle)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw).hex()
    for e in b["entries"]:  # the forger also rewrites the key records in the chain
        if e["kind"] in ("signing_key", "checkpoint_policy"):
            e["data"]["key_id"] = raw
    b = _rechained(b, 0, lambda e: None)
    _resign(b, key)
    return b


def _rechained(bundle: dict[str, Any], index: int, change: Any) -> dict[str, Any]:
    """Change entry `index` and recompute every hash from there (a careful forger)."""
    b = copy.deepcopy(bundle)
    change(b["entries"][index])
    prev = b["entries"][index - 1]["hash"] if index else chain.GENESIS_HASH
    for e in b["entries"][index:]:
        e["prev_hash"] = prev
        e["hash"] = prev = chain.hash_entry(e)
    return b


def test_dock_verify_needs_no_agent_state() -> None:
    """The verifier imports only the chain walk and canonical encoder from the agent: no
    database, no config, no MQTT; it runs anywhere the package is installed."""
    import subprocess

    code = ("import sys, agent.custody.verify_cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('agent', 'firmware_bridge', 'hw_sim', 'sqlite3', 'paho', 'jsonschema')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": ""}).stdout
    assert json.loads(out.replace("'", '"')) == [
        "agent", "agent.custody", "agent.custody.verifier", "agent.custody.verify_cli",
        "agent.store", "agent.store.canonical", "agent.store.chain", "agent.store.errors",
        "agent.store.hashing"]


async def test_rolled_back_ledger_raises_a_custody_alarm_centrally(
        make_rig: RigFactory, broker: Broker, central: Central) -> None:
    rig = make_rig(broker.settings("dock-e2e"))
    fleet = FleetModel()
    seen = 0

    def feed() -> None:
        nonlocal seen
        for m in central.messages[seen:]:
            if m.topic.endswith("/checkpoint") and m.body is not None:
                fleet.apply(m.topic, json.dumps(m.body).encode())
        seen = len(central.messages)

    def checkpoint_seqs() -> list[int]:
        return [b["seq"] for b in central.on("/dock-e2e/checkpoint") if b]

    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await offload(rig, spec("CUST0011", 51))
    await until(lambda: bool(checkpoint_seqs()), "a checkpoint on MQTT", agent=rig.agent)
    before_stop = max(r["seq"] for r in rig.ledger())
    rig.agent.terminate()
    # a clean stop hands the broker a checkpoint over everything recorded before it
    await central.wait_for(lambda: max(checkpoint_seqs()) >= before_stop, timeout=60)
    backup = rig.root / "state-backup"
    shutil.copytree(rig.state_dir, backup)  # a copy of the ledger as it is now

    rig.start_agent()  # republishes the shutdown checkpoint, then records more custody
    await rig.wait_agent_up()
    await rig.unplug("1")
    await offload(rig, spec("CUST0012", 52))
    high = max(r["seq"] for r in rig.ledger())
    await until(lambda: bool(checkpoint_seqs()) and max(checkpoint_seqs()) >= high,
                "the newest checkpoint on MQTT", agent=rig.agent)
    feed()
    snap = fleet.snapshot()["docks"][0]
    assert snap["custody_alarms"] == [] and snap["checkpoint_seq"] >= high
    assert central.invalid == []
    # `dockctl fleet` remembers the last checkpoint between runs in a state file
    m = broker.settings("central")
    state = rig.root / "fleet-checkpoints.json"
    fleet_cli = ("fleet", "--broker", f"127.0.0.1:{broker.port}", "--tls", "--ca-file",
                 str(m.ca_file), "--cert-file", str(m.cert_file), "--key-file",
                 str(m.key_file), "--once", "--wait", "2", "--checkpoint-state", str(state))
    (dock,) = (await rig.dockctl_json(*fleet_cli))["docks"]
    assert dock["custody_alarms"] == [] and dock["checkpoint_seq"] >= high
    rig.agent.terminate()
    await rig.dock.stop() if rig.dock else None

    # Roll the dock back to the copy: its next checkpoint does not extend the last one.
    shutil.rmtree(rig.state_dir)
    shutil.copytree(backup, rig.state_dir)
    n = len(central.messages)
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(m.topic.endswith("/checkpoint") for m in central.messages[n:]),
                "the rolled-back dock's checkpoint", agent=rig.agent)
    feed()
    alarms = fleet.snapshot()["docks"][0]["custody_alarms"]
    assert [a["alarm"] for a in alarms] == ["rolled_back"], alarms
    assert "CUSTODY ALARM dock-e2e rolled_back" in render_table(fleet.snapshot())
    # a fleet view started only now still knows the last good checkpoint
    (dock,) = (await rig.dockctl_json(*fleet_cli, expect=(1,)))["docks"]
    assert [a["alarm"] for a in dock["custody_alarms"]] == ["rolled_back"], dock
    code, out, _ = await rig.dockctl(*[a for a in fleet_cli if a != "--json"])
    assert code == 1 and "CUSTODY ALARM dock-e2e rolled_back" in out  # 1: a finding

    # The store still holds the files the rolled-back ledger no longer knows: the verify
    # command finds them and the dock raises STORE_INTEGRITY (its ledger alone is intact).
    body = {"id": "v-1", "args": {"deep": True}}
    await central.command("dock-e2e", "verify", body)
    await central.wait_for(lambda: any(b and b.get("id") == "v-1"
                                       for b in central.on("/reply/verify")), timeout=60)
    (reply,) = [b for b in central.on("/reply/verify") if b and b.get("id") == "v-1"]
    assert reply["ok"] and reply["result"]["ok"] is False
    assert {p["kind"] for p in reply["result"]["problems"]} == {"extra_file"}
    codes = {r[0] for r in rig.query("SELECT code FROM faults WHERE cleared_us IS NULL")}
    assert "store_integrity" in codes and "ledger_integrity" not in codes
    await central.wait_for(lambda: any(
        (b or {}).get("payload", {}).get("data", {}).get("code") == "store_integrity"
        for b in central.on("/events/fault")), timeout=60)
    assert central.invalid == []
    await asyncio.to_thread(rig.agent.terminate)


async def test_a_tampered_ledger_raises_ledger_integrity_at_start(make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await offload(rig, spec("CUST0021", 61))
    rig.agent.terminate()
    assert not [r for r in rig.query("SELECT code FROM faults")
                if r[0] == "ledger_integrity"]

    # Someone with write access edits a custody entry behind the agent's back.
    import sqlite3

    conn = sqlite3.connect(rig.db_path)
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("UPDATE ledger SET officer = '6666666' WHERE kind = 'offloaded'"
                 " AND seq = (SELECT MIN(seq) FROM ledger WHERE kind = 'offloaded')")
    conn.commit()
    conn.close()

    rig.start_agent()
    await rig.wait_agent_up()

    def raised() -> list[Any]:
        return rig.query("SELECT code, severity, detail FROM faults"
                         " WHERE code = 'ledger_integrity' AND cleared_us IS NULL")

    await until(lambda: bool(raised()), "a ledger_integrity fault", agent=rig.agent)
    ((_, severity, detail),) = raised()
    assert severity == "error"
    assert {p["kind"] for p in json.loads(detail)["problems"]} >= {"entry_altered"}
    code_, out, _ = await rig.dockctl("faults", "--open", "--code", "ledger_integrity")
    assert code_ == 0 and "ledger_integrity" in out
    rig.agent.terminate()
    # exported with the agent stopped (no control socket), the bundle carries the edit
    # and any third party finds it
    out_file = rig.root / "after.json"
    summary = await export(rig, out_file)
    code_, text = run_verify("--fingerprint", summary["fingerprint"], str(out_file))
    assert code_ == 1 and "PROBLEM entry_altered at seq" in text, text
