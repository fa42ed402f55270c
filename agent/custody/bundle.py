"""`dockctl ledger export`: the whole custody ledger as one portable, self-contained file.

A bundle is one JSON object (see docs/custody-store.md):

    {"type": "dock-agent/ledger-bundle", "v": 1, "dock_id", "exported_at",
     "agent_version", "public_key": {"key_id", "fingerprint", "pem"},
     "keys": [{"key_id", "created_us", "seq"}],
     "entries": [{"seq", "time_us", "dock_id", "kind", "recorder", "officer", "bay",
                  "session_id", "data", "prev_hash", "hash"}, ...],
     "checkpoints": [{"seq", "hash", "time_us", "dock_id", "key_id", "signature"}, ...]}

Entries are exactly the stored rows (`data` parsed), so `dock-verify` re-derives each hash
from them. The file is written atomically (temporary file, fsync, rename, fsync of the
directory): an interrupted export never leaves a half bundle under the final name.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.custody.verifier import BUNDLE_TYPE, fingerprint
from agent.store.db import open_readonly
from agent.store.ledger import ENTRY_COLUMNS, checkpoints, entry_from_row


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    return fingerprint(public_key.public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw))


def build_bundle(conn: sqlite3.Connection, public_key: Ed25519PublicKey, dock_id: str
                 ) -> dict[str, Any]:
    """The bundle of everything in the ledger, read in one consistent snapshot."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public_key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        entries = []
        for row in conn.execute(f"SELECT {ENTRY_COLUMNS} FROM ledger ORDER BY seq"):  # noqa: S608
            e = entry_from_row(row)
            entries.append({"seq": e.seq, "time_us": e.time_us, "dock_id": e.dock_id,
                            "kind": e.kind, "recorder": e.recorder, "officer": e.officer,
                            "bay": e.bay, "session_id": e.session_id, "data": dict(e.data),
                            "prev_hash": e.prev_hash, "hash": e.hash})
        cps = [{"seq": c.seq, "hash": c.hash, "time_us": c.time_us, "dock_id": c.dock_id,
                "key_id": c.key_id, "signature": c.signature} for c in checkpoints(conn)]
        keys = [{"key_id": r[0], "created_us": r[1], "seq": r[2]} for r in conn.execute(
            "SELECT key_id, created_us, seq FROM ledger_keys ORDER BY seq")]
    finally:
        if own:
            conn.execute("ROLLBACK")
    return {
        "type": BUNDLE_TYPE, "v": 1, "dock_id": dock_id,
        "exported_at": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "agent_version": __version__,
        "public_key": {"key_id": raw.hex(), "fingerprint": fingerprint(raw), "pem": pem},
        "keys": keys, "entries": entries, "checkpoints": cps,
    }


def export_bundle(db_path: Path, public_key: Ed25519PublicKey, dock_id: str, out: Path
                  ) -> dict[str, Any]:
    """Write the bundle to `out` atomically; returns a summary for dockctl."""
    conn = open_readonly(db_path)
    try:
        bundle = build_bundle(conn, public_key, dock_id)
    finally:
        conn.close()
    data = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    write_atomic(out, data)
    entries, cps = bundle["entries"], bundle["checkpoints"]
    return {"path": str(out), "dock_id": dock_id, "entries": len(entries),
            "first_seq": entries[0]["seq"] if entries else None,
            "last_seq": entries[-1]["seq"] if entries else None,
            "checkpoints": len(cps), "last_signed_seq": cps[-1]["seq"] if cps else None,
            "fingerprint": bundle["public_key"]["fingerprint"], "bytes": len(data)}


def write_atomic(path: Path, data: bytes) -> None:
    path = path.absolute()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
