"""The central side's checkpoint rule on checkpoints signed by a real ledger in SQLite:
growth extends, a restored copy is `rolled_back`, a restored copy grown past the last
checkpoint is `rewritten`, another key is `key_changed`, a bad signature is named."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.mqtt.checkpoints import CheckpointWatch, checkpoint_payload, judge
from agent.mqtt.validation import validate
from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from agent.store.ledger import Ledger, recent_checkpoints
from agent.store.signing import CheckpointSigner

KEY = Ed25519PrivateKey.generate()


def grow(db: Database, ledger: Ledger, n: int, tag: str) -> dict[str, object]:
    def tx(conn: sqlite3.Connection) -> None:
        for i in range(n):
            ledger.append(conn, "docked", recorder=f"{tag}{i}")
        ledger.checkpoint(conn)

    db.write_sync(tx)
    body = checkpoint_payload("dock-A", db.read_sync(lambda c: recent_checkpoints(c, 17)))
    validate("checkpoint", body)
    return body


def test_checkpoint_rule_on_a_real_ledger(tmp_path: Path) -> None:
    path = tmp_path / "a" / "dock.sqlite3"
    db = Database(path, ALL_SCHEMAS)
    ledger = Ledger("dock-A", CheckpointSigner(KEY), checkpoint_every=4)
    watch = CheckpointWatch()
    first = grow(db, ledger, 5, "r")
    assert watch.observe("dock-A", first).verdict == "first"
    assert watch.observe("dock-A", first).verdict == "same"
    db.close()
    backup = tmp_path / "backup"
    shutil.copytree(path.parent, backup)  # the copy someone restores later

    db = Database(path, ALL_SCHEMAS)
    later = grow(db, ledger, 10, "s")
    assert watch.observe("dock-A", later).verdict == "extends"
    db.close()

    # restored from the copy: behind what the central side has seen
    shutil.rmtree(path.parent)
    shutil.copytree(backup, path.parent)
    db = Database(path, ALL_SCHEMAS)
    ledger.checkpoint_every = 4
    rolled = grow(db, ledger, 1, "t")
    j = watch.observe("dock-A", rolled)
    assert j.verdict == "rolled_back" and j.alarm
    # ...and grown past it again with other entries: history was rewritten
    regrown = grow(db, ledger, 20, "u")
    assert int(regrown["seq"]) > int(later["seq"])  # type: ignore[call-overload]
    assert watch.observe("dock-A", regrown).verdict == "rewritten"
    assert [a.verdict for a in watch.alarms["dock-A"]] == ["rolled_back", "rewritten"]
    assert watch.last["dock-A"]["seq"] == later["seq"]  # an alarm never becomes the truth
    db.close()

    assert watch.observe("dock-B", later).verdict == "wrong_dock"  # A's, under B's topic
    forged = dict(later, signature="00" * 64)
    assert judge(None, forged).verdict == "bad_signature"
    other = Ledger("dock-A", CheckpointSigner(Ed25519PrivateKey.generate()))
    db2 = Database(tmp_path / "b" / "dock.sqlite3", ALL_SCHEMAS)
    assert judge(later, grow(db2, other, 30, "v")).verdict == "key_changed"
    db2.close()


def test_fleet_view_checks_checkpoints(tmp_path: Path) -> None:
    """The checkpoint topic is in the contract: the fleet view validates it, accepts a good
    one, refuses a malformed one, and shows another dock's checkpoint under this dock's
    topic as a custody alarm."""
    import json

    from agent.mqtt.fleet import FleetModel

    db = Database(tmp_path / "dock.sqlite3", ALL_SCHEMAS)
    body = grow(db, Ledger("dock-A", CheckpointSigner(KEY), checkpoint_every=4), 5, "r")
    db.close()
    model = FleetModel()
    assert model.apply("dock/v1/dock-A/checkpoint", json.dumps(body).encode())
    assert model.docks["dock-A"].checkpoint_seq == body["seq"]
    assert model.docks["dock-A"].invalid_messages == 0
    assert model.apply("dock/v1/dock-A/checkpoint", b'{"dock_id": "dock-A", "seq": 1}')
    assert model.docks["dock-A"].invalid_messages == 1
    assert model.apply("dock/v1/dock-B/checkpoint", json.dumps(body).encode())
    assert [a["alarm"] for a in model.docks["dock-B"].custody_alarms] == ["wrong_dock"]
