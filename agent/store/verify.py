"""Integrity checks behind `dockctl verify [--deep]` and the periodic fixity audit.

`verify_ledger` walks the hash chain and the signed checkpoints; `verify_store` compares
the evidence store on disk with the index (and the index with the ledger), and with
`deep=True` re-hashes every stored file. Both only read, so they work on a read-only
connection (`agent.store.db.open_readonly`). They block: run them off the event loop.

A stop (the agent's `StopSignal`, agent.longjobs) ends either check at its next unit of
work, also inside one file's re-hash, with JobStopped: a stopped check returns no report,
so nothing about the unfinished file (neither intact nor corrupt) can be recorded.

Every problem is named: `Problem(kind, where, detail)` where `where` is `seq N`,
`seq N-M`, a stored path, or `key <id>`. Kinds:

ledger  entry_missing, chain_broken, entry_altered, entry_unreadable, dock_id_mismatch,
        entries_truncated, checkpoint_mismatch, checkpoint_entry_missing,
        checkpoint_bad_signature, checkpoint_untrusted_key, checkpoint_missing,
        key_not_in_chain, key_not_registered
store   store_missing, missing_file, extra_file, size_mismatch, hash_mismatch,
        unreadable_file, unexpected_entry, file_writable, index_unrecorded,
        index_mismatch, index_missing_row

Limits: deleting entries after the last checkpoint (and any checkpoint beyond them)
cannot be seen from this database alone; the central service holds every entry hash
(they travel in the custody events) and detects it. Without a trusted public key a
forger who rewrites the whole database with a key of their own is not detected: pass
the dock's public key (`<key>.pub`) whenever one is available.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.longjobs import StopSignal, check
from agent.store import evidence
from agent.store.chain import ChainWalk, Wording
from agent.store.db import open_readonly
from agent.store.errors import CanonicalError, LedgerError, SigningError
from agent.store.hashing import hash_file
from agent.store.layout import is_partial_name
from agent.store.ledger import (
    LEDGER,
    Checkpoint,
    EntryKind,
    checkpoints,
    entry_from_row,
    get_entry,
)
from agent.store.signing import CheckpointSigner, key_id, public_key_from_id
from agent.store.table import Where


@dataclass(frozen=True)
class Problem:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.detail}"


@dataclass
class VerifyReport:
    problems: list[Problem] = field(default_factory=list)
    entries_checked: int = 0
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def add(self, kind: str, where: str, detail: str) -> None:
        self.problems.append(Problem(kind, where, detail))

    def merge(self, other: VerifyReport) -> VerifyReport:
        return VerifyReport(self.problems + other.problems,
                            self.entries_checked + other.entries_checked,
                            self.files_checked + other.files_checked)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "entries_checked": self.entries_checked,
                "files_checked": self.files_checked,
                "problems": [{"kind": p.kind, "where": p.where, "detail": p.detail}
                             for p in self.problems]}


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One consistent view of the database while the agent may be writing (WAL)."""
    if conn.in_transaction:
        yield  # the caller's transaction already is one
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


def verify_ledger(conn: sqlite3.Connection, public_key: Ed25519PublicKey | None = None, *,
                  dock_id: str | None = None, stop: StopSignal | None = None) -> VerifyReport:
    """Walk the chain and the checkpoints. `public_key`: the key the dock is trusted to have.

    Without `public_key`, checkpoints are checked against the keys the chain itself names.
    `stop`: the agent's (agent.longjobs): JobStopped between two entries once it is set.
    """
    with _snapshot(conn):
        return _verify_ledger(conn, public_key, dock_id, stop)


_WORDING = Wording(
    gap="the sequence jumps from {last} to {seq}: entries were deleted",
    unreadable="entry cannot be decoded: {error}",
    chain_broken="prev_hash {got}… is not {what} ({want}…):"
                 " an entry before it was inserted, removed or replaced",
    altered="content hashes to {computed}… but the stored hash is {stored}…:"
            " the entry was edited",
    dock_id="entry names dock {got!r}, expected {want!r}",
    truncated="a signed checkpoint covers seq {seq} but the ledger ends at {last}:"
              " entries were deleted from the tail",
    checkpoint_entry_missing="the entry this checkpoint signs is gone",
    checkpoint_mismatch="checkpoint signs hash {signed}… but the entry's hash is {entry}…:"
                        " history was rewritten",
    checkpoint_missing="the recorded policy requires a checkpoint every {every} entries",
)


def _verify_ledger(conn: sqlite3.Connection, public_key: Ed25519PublicKey | None,
                   dock_id: str | None, stop: StopSignal | None) -> VerifyReport:
    report = VerifyReport()
    cps = checkpoints(conn)
    # Hashes are kept only of checkpointed entries: the ledger may be long.
    walk = ChainWalk(report.add, _WORDING, dock_id=dock_id, keep={cp.seq for cp in cps})
    for row in LEDGER.rows(conn, order="seq"):
        report.entries_checked += 1
        if report.entries_checked % 1000 == 0:
            check(stop)
        try:
            entry = entry_from_row(row)
            computed = entry.computed_hash()
        except (ValueError, LedgerError, CanonicalError) as exc:
            walk.unreadable(row[0], row[10], exc)
            continue
        walk.entry(entry, computed)
    _check_keys(conn, report, walk.chain_keys, public_key)
    trusted = {key_id(public_key)} if public_key is not None else set(walk.chain_keys)
    for i, cp in enumerate(cps):
        if i % 1000 == 999:
            check(stop)
        _check_signature(cp, trusted, report)
        walk.checkpoint(cp.seq, cp.hash)
    walk.policy_gaps({cp.seq for cp in cps})
    return report


def _check_signature(cp: Checkpoint, trusted: set[str], report: VerifyReport) -> None:
    where = f"seq {cp.seq}"
    if cp.key_id not in trusted:
        report.add("checkpoint_untrusted_key", where,
                   f"signed by key {cp.key_id[:16]}…, which is not the dock's trusted key")
    try:
        good = CheckpointSigner.verify(public_key_from_id(cp.key_id), cp.dock_id, cp.seq,
                                       cp.hash, cp.time_us, cp.signature)
    except SigningError:
        good = False
    if not good:
        report.add("checkpoint_bad_signature", where,
                   "the checkpoint signature does not verify: it was forged or altered")


def _check_keys(conn: sqlite3.Connection, report: VerifyReport, chain_keys: dict[str, int],
                public_key: Ed25519PublicKey | None) -> None:
    registered = {r[0] for r in conn.execute("SELECT key_id FROM ledger_keys")}
    for kid in sorted(registered - set(chain_keys)):
        report.add("key_not_in_chain", f"key {kid[:16]}",
                   "a public key in the key table was never recorded in the chain")
    for kid in sorted(set(chain_keys) - registered):
        report.add("key_not_registered", f"key {kid[:16]}",
                   f"the chain names this key at seq {chain_keys[kid]} but the key table"
                   " does not hold it")
    if public_key is not None and chain_keys:
        kid = key_id(public_key)
        if kid not in chain_keys:
            report.add("key_not_in_chain", f"key {kid[:16]}",
                       "the trusted public key was never recorded in this ledger")


def _walk(root: Path, rel: str, report: VerifyReport, found: set[str],
          stop: StopSignal | None) -> None:
    check(stop)  # once per directory: a store of many directories is walked for long
    try:
        it = os.scandir(root / rel if rel else root)
    except OSError as exc:
        report.add("unreadable_file", _printable(rel) or ".", f"cannot list directory: {exc}")
        return
    with it:
        for de in it:
            if is_partial_name(de.name):
                continue  # an offload in progress (see agent.store.layout)
            path = f"{rel}/{de.name}" if rel else de.name
            if de.is_symlink():
                report.add("unexpected_entry", _printable(path),
                           "a symbolic link inside the store")
            elif de.is_dir(follow_symlinks=False):
                _walk(root, path, report, found, stop)
            elif de.is_file(follow_symlinks=False):
                found.add(path)
            else:
                report.add("unexpected_entry", _printable(path),
                           "not a regular file or directory")


def verify_store(conn: sqlite3.Connection, store_root: Path, *, deep: bool,
                 progress: Callable[[str], Any] | None = None,
                 stop: StopSignal | None = None) -> VerifyReport:
    """Compare the store with the index and the index with the ledger.

    Safe to run beside a working agent: the store is walked before the index is read (a
    file is renamed into place before its record commits), and a file without a record
    is looked up once more at the end before it is called extra, so an offload that
    commits meanwhile is not reported.
    """
    report = VerifyReport()
    if not store_root.is_dir():
        report.add("store_missing", str(store_root), "the evidence store directory is missing")
        with _snapshot(conn):
            _check_index(conn, evidence.query(conn), report, stop)
        return report
    found: set[str] = set()
    _walk(store_root, "", report, found, stop)
    with _snapshot(conn):
        files = evidence.query(conn)
        _check_index(conn, files, report, stop)
    live = {f.stored_relpath: f for f in files if f.purged_us is None}
    for relpath, f in live.items():
        check(stop)  # JobStopped between two files once the agent stops
        report.files_checked += 1
        if progress is not None:
            progress(relpath)
        if relpath not in found:
            _missing(store_root / relpath, relpath, report)
            continue
        _check_file(store_root / relpath, f, deep, report, stop)
    for i, path in enumerate(sorted(found - set(live))):
        if i % 1000 == 999:
            check(stop)
        row = _index_row(conn, path)
        if row is None:
            report.add("extra_file", _printable(path),
                       "a file in the store with no evidence record")
        elif row[0] is not None:
            report.add("extra_file", _printable(path),
                       "recorded as purged but still in the store")
        # else: committed while we were walking; its checks run on the next audit
    return report


def _index_row(conn: sqlite3.Connection, relpath: str) -> Any:
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return None  # a name that is not UTF-8 was never indexed (layout never makes one)
    return conn.execute("SELECT purged_us FROM evidence_files WHERE stored_relpath = ?",
                        (relpath,)).fetchone()


def _check_file(p: Path, f: evidence.StoredFile, deep: bool, report: VerifyReport,
                stop: StopSignal | None) -> None:
    relpath = f.stored_relpath
    try:
        st = p.lstat()
    except OSError as exc:
        report.add("unreadable_file", relpath, f"cannot stat: {exc}")
        return
    if st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        report.add("file_writable", relpath,
                   f"mode {stat.S_IMODE(st.st_mode):04o}: stored copies must be read-only")
    if st.st_size != f.size:
        report.add("size_mismatch", relpath, f"{st.st_size} bytes on disk, {f.size} recorded")
        return
    if deep:
        try:
            # JobStopped inside the file: the whole check ends, judging it neither way
            _, digest = hash_file(p, between_reads=lambda: check(stop))
        except OSError as exc:
            report.add("unreadable_file", relpath, f"cannot read: {exc}")
            return
        if digest != f.blake3_hex:
            report.add("hash_mismatch", relpath,
                       f"content hashes to {digest[:16]}…, recorded {f.blake3_hex[:16]}…")


def _printable(path: str) -> str:
    """A store path as text: bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _missing(path: Path, relpath: str, report: VerifyReport) -> None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        return  # already reported as unexpected_entry by the walk
    report.add("missing_file", relpath, "recorded in the index but not in the store")


def _check_index(conn: sqlite3.Connection, files: list[evidence.StoredFile],
                 report: VerifyReport, stop: StopSignal | None) -> None:
    """Each index row must match its "offloaded" ledger entry, and vice versa."""
    by_id = {f.id: f for f in files}
    for i, f in enumerate(files):
        if i % 1000 == 999:
            check(stop)
        if f.ledger_seq is None:
            report.add("index_unrecorded", f.stored_relpath, "no ledger entry for this file")
            continue
        try:
            entry = get_entry(conn, f.ledger_seq)
        except (ValueError, LedgerError):
            entry = None
        if entry is None or entry.kind != EntryKind.OFFLOADED:
            report.add("index_unrecorded", f.stored_relpath,
                       f"ledger seq {f.ledger_seq} is not this file's offloaded entry")
            continue
        d = entry.data
        if (d.get("file_id"), d.get("stored_relpath"), d.get("size"), d.get("blake3"),
                d.get("source_name_hex")) != (f.id, f.stored_relpath, f.size, f.blake3_hex,
                                              f.source_name.hex()):
            report.add("index_mismatch", f.stored_relpath,
                       f"the index row differs from ledger entry {entry.seq}")
    for i, row in enumerate(LEDGER.rows(conn, Where().eq("kind", EntryKind.OFFLOADED.value))):
        if i % 1000 == 999:
            check(stop)
        try:
            fid = entry_from_row(row).data.get("file_id")
        except (ValueError, LedgerError):
            continue  # reported by verify_ledger
        if fid not in by_id:
            report.add("index_missing_row", f"seq {row[0]}",
                       f"ledger records file {fid} but the index has no such row")


def verify_all(conn: sqlite3.Connection, store_root: Path, *,
               public_key: Ed25519PublicKey | None, deep: bool) -> VerifyReport:
    return verify_ledger(conn, public_key).merge(verify_store(conn, store_root, deep=deep))


def run_audit(db_path: Path, store_root: Path, *, public_key: Ed25519PublicKey | None,
              deep: bool, dock_id: str | None = None) -> VerifyReport:
    """The whole check on its own read-only connection; blocking, so from the agent call it
    as `await asyncio.to_thread(run_audit, ...)` (the connection lives in that thread)."""
    conn = open_readonly(db_path)
    try:
        return verify_ledger(conn, public_key, dock_id=dock_id).merge(
            verify_store(conn, store_root, deep=deep))
    finally:
        conn.close()
