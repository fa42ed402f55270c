"""Case tags (regulations 000 §4, 004 §19: classification by case, party and cause).

A tag request names who tags and any of case number, case party, cause, activity name and
free labels, for a selection of files. It is one "tagged" ledger entry (who, when, which
files by id and hash) plus one index row per file pointing at that entry. Re-tagging adds
rows and entries; nothing is rewritten, so a file's tags are its whole tagging history.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.lifecycle.errors import LifecycleError
from agent.lifecycle.fields import printable_text
from agent.store import evidence
from agent.store.ledger import EntryKind, Ledger, LedgerEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence_tags (
    id         INTEGER PRIMARY KEY,
    file_id    INTEGER NOT NULL REFERENCES evidence_files (id),
    ledger_seq INTEGER NOT NULL,
    time_us    INTEGER NOT NULL,
    tagged_by  TEXT    NOT NULL,
    case_no    TEXT,
    case_party TEXT,
    cause      TEXT,
    activity   TEXT,
    labels     TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_tags_file ON evidence_tags (file_id);
CREATE INDEX IF NOT EXISTS evidence_tags_case ON evidence_tags (case_no);
CREATE TRIGGER IF NOT EXISTS evidence_tags_no_update BEFORE UPDATE ON evidence_tags
BEGIN SELECT RAISE(ABORT, 'tags are append-only'); END;
CREATE TRIGGER IF NOT EXISTS evidence_tags_no_delete BEFORE DELETE ON evidence_tags
BEGIN SELECT RAISE(ABORT, 'tags are append-only'); END;
"""

FIELDS = ("case_no", "case_party", "cause", "activity")
MAX_TEXT = 200
MAX_LABELS = 32


class TagError(LifecycleError):
    """A tag request is incomplete or malformed."""


@dataclass(frozen=True)
class Tag:
    file_id: int
    ledger_seq: int
    time_us: int
    tagged_by: str
    case_no: str | None
    case_party: str | None
    cause: str | None
    activity: str | None
    labels: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "ledger_seq": self.ledger_seq,
                "time_us": self.time_us, "tagged_by": self.tagged_by,
                "case_no": self.case_no, "case_party": self.case_party, "cause": self.cause,
                "activity": self.activity, "labels": list(self.labels)}


def _text(value: object, name: str) -> str:
    return printable_text(value, name, limit=MAX_TEXT, error=TagError)


def parse_tag(args: Mapping[str, Any]) -> dict[str, Any]:
    """The tag fields of a request (tagged_by required, at least one field or label)."""
    if not args.get("tagged_by"):
        raise TagError("tagged_by is required: every tag names who tagged")
    out: dict[str, Any] = {"tagged_by": _text(args["tagged_by"], "tagged_by")}
    for name in FIELDS:
        value = args.get(name)
        out[name] = None if value in (None, "") else _text(value, name)
    labels = args.get("labels") or []
    if not isinstance(labels, list) or len(labels) > MAX_LABELS:
        raise TagError(f"labels must be a list of at most {MAX_LABELS} strings")
    out["labels"] = sorted({_text(v, "label") for v in labels})
    if not any(out[n] for n in FIELDS) and not out["labels"]:
        raise TagError("a tag needs at least one of case_no, case_party, cause, activity,"
                       " labels")
    return out


def parse_labels(args: Mapping[str, Any]) -> dict[str, Any]:
    """Labels of a preservation copy: case number and name, or activity (one required)."""
    out = {name: None if args.get(name) in (None, "") else _text(args[name], name)
           for name in ("case_no", "case_name", "activity")}
    if not any(out.values()):
        raise TagError("a preserved copy is labelled with its case (case_no, case_name) or"
                       " activity: give at least one")
    return out


def tag_files(conn: sqlite3.Connection, ledger: Ledger, files: Sequence[evidence.StoredFile],
              fields: Mapping[str, Any]) -> LedgerEntry:
    """One "tagged" ledger entry and one index row per file, in the caller's transaction."""
    entry = ledger.append(conn, EntryKind.TAGGED, data={
        **fields, "files": [{"file_id": f.id, "blake3": f.blake3_hex,
                             "stored_relpath": f.stored_relpath} for f in files]})
    for f in files:
        conn.execute(
            "INSERT INTO evidence_tags (file_id, ledger_seq, time_us, tagged_by, case_no,"
            " case_party, cause, activity, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f.id, entry.seq, entry.time_us, fields["tagged_by"], fields["case_no"],
             fields["case_party"], fields["cause"], fields["activity"],
             json.dumps(list(fields["labels"]))))
    return entry


def tags_of(conn: sqlite3.Connection, file_id: int) -> list[Tag]:
    rows = conn.execute(
        "SELECT file_id, ledger_seq, time_us, tagged_by, case_no, case_party, cause, activity,"
        " labels FROM evidence_tags WHERE file_id = ? ORDER BY id", (file_id,)).fetchall()
    return [Tag(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(json.loads(r[8])))
            for r in rows]


def files_with_case(conn: sqlite3.Connection, case_no: str) -> list[int]:
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT file_id FROM evidence_tags WHERE case_no = ? ORDER BY file_id",
        (case_no,))]
