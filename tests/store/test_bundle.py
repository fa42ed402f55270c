"""Bundles exported from a real SQLite ledger: the recorded checkpoint policy (even when it
changes) is what dock-verify demands, and a required checkpoint removed is named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.custody.bundle import export_bundle
from agent.custody.verifier import verify_bundle
from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner


def test_policy_change_is_honoured_and_a_missing_checkpoint_named(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    db = Database(tmp_path / "dock.sqlite3", ALL_SCHEMAS)

    def grow(every: int, n: int) -> None:
        ledger = Ledger("dock-A", CheckpointSigner(key), checkpoint_every=every)

        def tx(conn: sqlite3.Connection) -> None:
            for i in range(n):
                ledger.append(conn, "docked", recorder=f"R{i}", data={"i": i, "x": 0.5})

        db.write_sync(tx)

    grow(5, 12)
    grow(3, 10)  # the policy changes; a checkpoint_policy entry records it
    db.close()
    out = tmp_path / "b.json"
    summary = export_bundle(tmp_path / "dock.sqlite3", key.public_key(), "dock-A", out)
    assert summary["entries"] == 24 and summary["bytes"] == out.stat().st_size
    bundle = json.loads(out.read_bytes())
    report = verify_bundle(bundle, trusted_fingerprint=summary["fingerprint"])
    assert report.ok, report.findings
    required = [c["seq"] for c in bundle["checkpoints"]]
    assert 5 in required and 10 in required and 15 in required  # 5, 10, then every 3
    bundle["checkpoints"] = [c for c in bundle["checkpoints"] if c["seq"] != 10]
    report = verify_bundle(bundle, trusted_fingerprint=summary["fingerprint"])
    assert [(f.kind, f.where) for f in report.findings] == [("checkpoint_missing", "seq 10")]
