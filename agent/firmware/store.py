"""The dock's durable firmware records in SQLite (run inside the caller's transaction).

- `firmware_packages`: staged packages (verified on entry), by image BLAKE3.
- `firmware_policy`: per-model overrides set by the central service.
- `firmware_attempts`: the dock's own record of each update of a recorder. The recorder
  keeps the durable transfer offset; this row says what the dock started, how far it knows
  the transfer got, and how it ended (read back at the next docking after the reboot).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Literal

from agent.firmware.policy import ModelPolicy, PackageFacts

SCHEMA = """
CREATE TABLE IF NOT EXISTS firmware_packages (
    blake3      TEXT    PRIMARY KEY,
    version     TEXT    NOT NULL,
    vendor      TEXT    NOT NULL,
    models      TEXT    NOT NULL,
    min_from    TEXT,
    max_from    TEXT,
    size        INTEGER NOT NULL,
    key_id      TEXT    NOT NULL,
    created     TEXT    NOT NULL,
    file        TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    staged_us   INTEGER NOT NULL,
    ledger_seq  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS firmware_policy (
    model      TEXT    PRIMARY KEY,
    target     TEXT,
    allowlist  TEXT,
    set_by     TEXT    NOT NULL,
    set_us     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS firmware_attempts (
    id          INTEGER PRIMARY KEY,
    recorder    TEXT    NOT NULL,
    package     TEXT    NOT NULL,
    from_version TEXT   NOT NULL,
    to_version  TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('transferring', 'rebooting', 'completed',
                                                   'failed', 'rolled_back')),
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    size        INTEGER NOT NULL,
    resumes     INTEGER NOT NULL DEFAULT 0,
    started_us  INTEGER NOT NULL,
    updated_us  INTEGER NOT NULL,
    reason      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS firmware_attempts_recorder ON firmware_attempts (recorder, id);
"""

AttemptState = Literal["transferring", "rebooting", "completed", "failed", "rolled_back"]
OPEN_STATES = ("transferring", "rebooting")


@dataclass(frozen=True)
class StagedPackage:
    facts: PackageFacts
    vendor: str
    key_id: str
    created: str
    file: str  # file name under the firmware directory
    source: str
    staged_us: int
    ledger_seq: int

    def as_dict(self) -> dict[str, object]:
        f = self.facts
        return {"blake3": f.blake3, "version": f.version, "models": list(f.models),
                "min_from": f.min_from, "max_from": f.max_from, "size": f.size,
                "vendor": self.vendor, "key_id": self.key_id, "created": self.created,
                "source": self.source, "staged_us": self.staged_us,
                "ledger_seq": self.ledger_seq}


@dataclass(frozen=True)
class Attempt:
    id: int
    recorder: str
    package: str
    from_version: str
    to_version: str
    state: AttemptState
    bytes_done: int
    size: int
    resumes: int
    started_us: int
    updated_us: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "recorder": self.recorder, "package": self.package,
                "from_version": self.from_version, "to_version": self.to_version,
                "state": self.state, "bytes_done": self.bytes_done, "size": self.size,
                "resumes": self.resumes, "started_us": self.started_us,
                "updated_us": self.updated_us, "reason": self.reason}


_PKG_COLS = ("blake3, version, vendor, models, min_from, max_from, size, key_id, created, file,"
             " source, staged_us, ledger_seq")
_ATT_COLS = ("id, recorder, package, from_version, to_version, state, bytes_done, size,"
             " resumes, started_us, updated_us, reason")


def _package(r: sqlite3.Row | tuple[object, ...]) -> StagedPackage:
    models = json.loads(str(r[3]))
    facts = PackageFacts(blake3=str(r[0]), version=str(r[1]), models=tuple(models),
                         min_from=r[4] if isinstance(r[4], str) else None,
                         max_from=r[5] if isinstance(r[5], str) else None, size=int(str(r[6])))
    return StagedPackage(facts=facts, vendor=str(r[2]), key_id=str(r[7]), created=str(r[8]),
                         file=str(r[9]), source=str(r[10]), staged_us=int(str(r[11])),
                         ledger_seq=int(str(r[12])))


def _attempt(r: sqlite3.Row | tuple[object, ...]) -> Attempt:
    state = str(r[5])
    assert state in ("transferring", "rebooting", "completed", "failed", "rolled_back")
    return Attempt(int(str(r[0])), str(r[1]), str(r[2]), str(r[3]), str(r[4]),
                   state,  # type: ignore[arg-type]  # checked by the table's CHECK
                   int(str(r[6])), int(str(r[7])), int(str(r[8])), int(str(r[9])),
                   int(str(r[10])), str(r[11]))


def ensure_schema(conn: sqlite3.Connection) -> None:
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


# --- packages ------------------------------------------------------------------------------

def get_package(conn: sqlite3.Connection, blake3_hex: str) -> StagedPackage | None:
    r = conn.execute(f"SELECT {_PKG_COLS} FROM firmware_packages WHERE blake3 = ?",  # noqa: S608
                     (blake3_hex,)).fetchone()
    return _package(r) if r else None


def packages(conn: sqlite3.Connection) -> list[StagedPackage]:
    rows = conn.execute(f"SELECT {_PKG_COLS} FROM firmware_packages ORDER BY staged_us, blake3")  # noqa: S608
    return [_package(r) for r in rows]


def insert_package(conn: sqlite3.Connection, p: StagedPackage) -> None:
    f = p.facts
    conn.execute(
        f"INSERT INTO firmware_packages ({_PKG_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
        (f.blake3, f.version, p.vendor, json.dumps(list(f.models)), f.min_from, f.max_from,
         f.size, p.key_id, p.created, p.file, p.source, p.staged_us, p.ledger_seq))


# --- policy --------------------------------------------------------------------------------

def central_policies(conn: sqlite3.Connection) -> dict[str, ModelPolicy]:
    out = {}
    for model, target, allow in conn.execute(
            "SELECT model, target, allowlist FROM firmware_policy ORDER BY model"):
        listed = tuple(json.loads(allow)) if allow is not None else None
        out[str(model)] = ModelPolicy(target, listed, "central")
    return out


def set_central_policy(conn: sqlite3.Connection, model: str, policy: ModelPolicy | None,
                       *, set_by: str, now_us: int) -> None:
    """Replace a model's central override (None: back to the config)."""
    if policy is None:
        conn.execute("DELETE FROM firmware_policy WHERE model = ?", (model,))
        return
    allow = json.dumps(list(policy.allowlist)) if policy.allowlist is not None else None
    conn.execute("INSERT OR REPLACE INTO firmware_policy (model, target, allowlist, set_by,"
                 " set_us) VALUES (?, ?, ?, ?, ?)", (model, policy.target, allow, set_by, now_us))


# --- attempts ------------------------------------------------------------------------------

def open_attempt(conn: sqlite3.Connection, recorder: str) -> Attempt | None:
    r = conn.execute(f"SELECT {_ATT_COLS} FROM firmware_attempts WHERE recorder = ? AND state IN"  # noqa: S608
                     " ('transferring', 'rebooting') ORDER BY id DESC LIMIT 1",
                     (recorder,)).fetchone()
    return _attempt(r) if r else None


def open_attempts(conn: sqlite3.Connection) -> list[Attempt]:
    rows = conn.execute(f"SELECT {_ATT_COLS} FROM firmware_attempts WHERE state IN"  # noqa: S608
                        " ('transferring', 'rebooting') ORDER BY id")
    return [_attempt(r) for r in rows]


def last_attempts(conn: sqlite3.Connection, limit: int = 50) -> list[Attempt]:
    rows = conn.execute(f"SELECT {_ATT_COLS} FROM firmware_attempts ORDER BY id DESC LIMIT ?",  # noqa: S608
                        (limit,))
    return [_attempt(r) for r in rows]


def failures(conn: sqlite3.Connection, recorder: str) -> dict[str, int]:
    rows = conn.execute("SELECT package, COUNT(*) FROM firmware_attempts WHERE recorder = ? AND"
                        " state IN ('failed', 'rolled_back') GROUP BY package", (recorder,))
    return {str(p): int(n) for p, n in rows}


def start_attempt(conn: sqlite3.Connection, recorder: str, pkg: PackageFacts,
                  from_version: str, now_us: int) -> Attempt:
    cur = conn.execute(
        "INSERT INTO firmware_attempts (recorder, package, from_version, to_version, state,"
        " size, started_us, updated_us) VALUES (?, ?, ?, ?, 'transferring', ?, ?, ?)",
        (recorder, pkg.blake3, from_version, pkg.version, pkg.size, now_us, now_us))
    row = conn.execute(f"SELECT {_ATT_COLS} FROM firmware_attempts WHERE id = ?",  # noqa: S608
                       (cur.lastrowid,)).fetchone()
    return _attempt(row)


def update_attempt(conn: sqlite3.Connection, attempt_id: int, *, now_us: int,
                   state: AttemptState | None = None, bytes_done: int | None = None,
                   resumed: bool = False, reason: str | None = None) -> None:
    conn.execute(
        "UPDATE firmware_attempts SET updated_us = ?, state = COALESCE(?, state),"
        " bytes_done = COALESCE(?, bytes_done), resumes = resumes + ?,"
        " reason = COALESCE(?, reason) WHERE id = ?",
        (now_us, state, bytes_done, 1 if resumed else 0, reason, attempt_id))


def rolled_back(conn: sqlite3.Connection, recorder: str) -> frozenset[str]:
    rows = conn.execute("SELECT DISTINCT package FROM firmware_attempts WHERE recorder = ? AND"
                        " state = 'rolled_back'", (recorder,))
    return frozenset(str(p) for (p,) in rows)
