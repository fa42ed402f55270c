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
Entries are streamed from one read transaction, so memory does not grow with the ledger.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import __version__
from agent.custody.verifier import BUNDLE_TYPE, fingerprint
from agent.store.db import open_readonly
from agent.store.durable import fsync_dir
from agent.store.ledger import LEDGER, checkpoints, entry_from_row


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    return fingerprint(public_key.public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw))


def _entry_dict(row: Any) -> dict[str, Any]:
    e = entry_from_row(row)
    return {"seq": e.seq, "time_us": e.time_us, "dock_id": e.dock_id, "kind": e.kind,
            "recorder": e.recorder, "officer": e.officer, "bay": e.bay,
            "session_id": e.session_id, "data": dict(e.data), "prev_hash": e.prev_hash,
            "hash": e.hash}


def _header(public_key: Ed25519PublicKey, dock_id: str) -> dict[str, Any]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public_key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return {
        "type": BUNDLE_TYPE, "v": 1, "dock_id": dock_id,
        "exported_at": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "agent_version": __version__,
        "public_key": {"key_id": raw.hex(), "fingerprint": fingerprint(raw), "pem": pem},
    }


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_bundle(conn: sqlite3.Connection, public_key: Ed25519PublicKey, dock_id: str,
                 out: BinaryIO) -> dict[str, Any]:
    """Stream the bundle of everything in the ledger, read in one consistent snapshot;
    entries are written as they are read, so a long ledger never sits in memory."""
    header = _header(public_key, dock_id)
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        out.write(_dumps(header)[:-1] + b',"entries":[')
        count, first, last = 0, None, None
        for row in LEDGER.rows(conn, order="seq"):
            out.write((b"," if count else b"") + b"\n" + _dumps(_entry_dict(row)))
            count += 1
            first = row[0] if first is None else first
            last = row[0]
        cps = [{"seq": c.seq, "hash": c.hash, "time_us": c.time_us, "dock_id": c.dock_id,
                "key_id": c.key_id, "signature": c.signature} for c in checkpoints(conn)]
        keys = [{"key_id": r[0], "created_us": r[1], "seq": r[2]} for r in conn.execute(
            "SELECT key_id, created_us, seq FROM ledger_keys ORDER BY seq")]
    finally:
        if own:
            conn.execute("ROLLBACK")
    out.write(b"\n]," + _dumps({"keys": keys, "checkpoints": cps})[1:] + b"\n")
    return {"dock_id": dock_id, "entries": count, "first_seq": first, "last_seq": last,
            "checkpoints": len(cps), "last_signed_seq": cps[-1]["seq"] if cps else None,
            "fingerprint": header["public_key"]["fingerprint"]}


def export_bundle(db_path: Path, public_key: Ed25519PublicKey, dock_id: str, out: Path
                  ) -> dict[str, Any]:
    """Write the bundle to `out` atomically; returns a summary for dockctl."""
    out = out.absolute()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    conn = open_readonly(db_path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            summary = write_bundle(conn, public_key, dock_id, fh)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        tmp.replace(out)
        fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        conn.close()
    return {"path": str(out), **summary, "bytes": size}
