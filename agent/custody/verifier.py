"""Check an exported ledger bundle, and optionally an evidence store, with no agent state.

This is the third party's side of custody (see docs/custody-store.md). It re-derives every
entry hash from the canonical encoding, walks the chain, checks each signed checkpoint with
the dock's Ed25519 key and, given the evidence store, re-hashes every stored file the
ledger says is there; the chain walk itself is the one the dock runs (`agent.store.chain`).
It depends only on that walk, the canonical encoder, BLAKE3 and `cryptography`,
so it runs on any machine with the package installed, far from the dock.

Each finding is a `Finding(kind, where, detail)`. Kinds:

bundle   bundle_unreadable, bundle_key_mismatch, wrong_key, key_not_in_chain
entries  entries_reordered, entry_duplicated, entry_missing, chain_broken, entry_altered,
         entry_unreadable, dock_id_mismatch, unsafe_path
signing  checkpoint_bad_signature, checkpoint_untrusted_key, checkpoint_mismatch,
         checkpoint_entry_missing, entries_truncated, checkpoint_missing, no_checkpoint
store    store_missing, missing_file, size_mismatch, hash_mismatch, unreadable_file,
         extra_file, unexpected_entry

`unsigned_tail` is a note, not a finding: entries after the newest checkpoint are chained
but not yet signed (compare their hashes with the checkpoint the dock published since).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.store.chain import (
    ENTRY_FIELDS,
    ChainWalk,
    Wording,
    checkpoint_message,
    hash_entry,
    span,
)
from agent.store.hashing import hash_file

BUNDLE_TYPE = "dock-agent/ledger-bundle"
PARTIAL_PREFIX = ".partial-"  # in-progress offloads in a store (agent.store.layout)
_WORDING = Wording(
    gap="the sequence jumps from {last} to {seq}: entries were removed",
    unreadable="cannot be encoded: {error}",
    chain_broken="prev_hash {got}… does not name the entry before it ({want}…):"
                 " an entry was inserted, removed or replaced",
    altered="content hashes to {computed}… but the entry says {stored}…: the entry was edited",
    dock_id="entry names dock {got!r}, the bundle {want!r}",
    truncated="a signed checkpoint covers seq {seq} but the entries end at {last}:"
              " entries were cut from the tail",
    checkpoint_entry_missing="the entry it signs is not there",
    checkpoint_mismatch="the checkpoint signs {signed}… but the entry hashes to {entry}…:"
                        " history was rewritten",
    checkpoint_missing="the ledger's recorded checkpoint policy requires a checkpoint here",
)


def fingerprint(raw_public_key: bytes) -> str:
    """`SHA256:<hex>` of the raw 32-byte Ed25519 public key: short enough to read aloud."""
    return "SHA256:" + hashlib.sha256(raw_public_key).hexdigest()


def signature_ok(key: Ed25519PublicKey, cp: Mapping[str, Any]) -> bool:
    try:
        key.verify(bytes.fromhex(cp["signature"]),
                   checkpoint_message(cp["dock_id"], cp["seq"], cp["hash"], cp["time_us"]))
    except (InvalidSignature, ValueError, TypeError, KeyError):
        return False
    return True


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.detail}"


@dataclass
class BundleReport:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dock_id: str | None = None
    fingerprint: str | None = None
    key_pinned: bool = False
    entries: int = 0
    checkpoints: int = 0
    last_signed_seq: int | None = None
    files_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, where: str, detail: str) -> None:
        self.findings.append(Finding(kind, where, detail))

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "dock_id": self.dock_id, "fingerprint": self.fingerprint,
            "key_pinned": self.key_pinned, "entries": self.entries,
            "checkpoints": self.checkpoints, "last_signed_seq": self.last_signed_seq,
            "files_checked": self.files_checked, "notes": list(self.notes),
            "findings": [{"kind": f.kind, "where": f.where, "detail": f.detail}
                         for f in self.findings],
        }


class BundleError(Exception):
    """The bundle cannot be read at all (not JSON, not a ledger bundle)."""


def _public_key(bundle: Mapping[str, Any], report: BundleReport) -> Ed25519PublicKey | None:
    pk = bundle.get("public_key")
    if not isinstance(pk, Mapping):
        report.add("bundle_unreadable", "public_key", "the bundle names no public key")
        return None
    try:
        loaded = serialization.load_pem_public_key(str(pk.get("pem", "")).encode())
    except (ValueError, TypeError) as exc:
        report.add("bundle_unreadable", "public_key", f"the public key PEM is unreadable: {exc}")
        return None
    if not isinstance(loaded, Ed25519PublicKey):
        report.add("bundle_unreadable", "public_key", "the public key is not Ed25519")
        return None
    raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    report.fingerprint = fingerprint(raw)
    if pk.get("key_id") != raw.hex() or pk.get("fingerprint") != report.fingerprint:
        report.add("bundle_key_mismatch", "public_key",
                   "the key id or fingerprint written in the bundle is not that of its PEM key")
    return loaded


def verify_bundle(bundle: Mapping[str, Any], *, trusted_fingerprint: str | None = None,
                  store: Path | None = None) -> BundleReport:
    """Every check of a bundle (a parsed JSON object); `store`: also check the files."""
    report = BundleReport()
    if bundle.get("type") != BUNDLE_TYPE or bundle.get("v") != 1:
        raise BundleError(f"not a dock-agent ledger bundle (type {bundle.get('type')!r},"
                          f" v {bundle.get('v')!r})")
    dock_id = bundle.get("dock_id")
    report.dock_id = dock_id if isinstance(dock_id, str) else None
    key = _public_key(bundle, report)
    if trusted_fingerprint is not None:
        report.key_pinned = True
        if report.fingerprint != trusted_fingerprint.strip():
            report.add("wrong_key", "public_key",
                       f"the bundle's key {report.fingerprint} is not the trusted key"
                       f" {trusted_fingerprint.strip()}: it was not exported from that dock"
                       " or was re-signed")
    else:
        report.notes.append("key not pinned: checked against the key inside the bundle;"
                            " pass --fingerprint or --key to check it is the dock's key")
    raw_entries = bundle.get("entries")
    raw_cps = bundle.get("checkpoints")
    if not isinstance(raw_entries, list) or not isinstance(raw_cps, list):
        raise BundleError("the bundle has no entries or checkpoints list")
    walk, files = _walk_entries(raw_entries, report)
    _check_checkpoints(raw_cps, key, walk, report)
    if key is not None and walk.chain_keys and report.fingerprint is not None:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if raw.hex() not in walk.chain_keys:
            report.add("key_not_in_chain", "public_key",
                       "the ledger never recorded this key as the dock's signing key")
    if store is not None:
        _check_store(store, files, report)
    return report


@dataclass(frozen=True)
class _Entry:
    """A bundle entry as the chain walk reads it (`agent.store.chain.Link`)."""

    seq: int
    dock_id: object
    kind: object
    data: Mapping[str, Any]
    prev_hash: object
    hash: object

    @classmethod
    def of(cls, e: Mapping[str, Any]) -> _Entry:
        return cls(e["seq"], e["dock_id"], e["kind"], e["data"], e["prev_hash"], e["hash"])


def _readable_entries(raw: list[Any], report: BundleReport) -> dict[int, dict[str, Any]]:
    """The well-formed entries by seq; malformed, reordered and duplicated ones named."""
    good: list[dict[str, Any]] = []
    for i, e in enumerate(raw):
        if not isinstance(e, Mapping) or any(k not in e for k in ENTRY_FIELDS) \
                or not isinstance(e["seq"], int) or not isinstance(e["data"], Mapping):
            report.add("entry_unreadable", f"entry #{i + 1}",
                       "not a ledger entry (fields missing or of the wrong type)")
            continue
        good.append(dict(e))
    report.entries = len(good)
    listed = [e["seq"] for e in good]
    for a, b in itertools.pairwise(listed):
        if b < a:
            report.add("entries_reordered", f"seq {b}",
                       f"entry {b} is listed after entry {a}: the order was changed")
            break
    by_seq: dict[int, dict[str, Any]] = {}
    for e in good:
        if e["seq"] in by_seq:
            report.add("entry_duplicated", f"seq {e['seq']}", "two entries have this seq")
            continue
        by_seq[e["seq"]] = e
    return by_seq


def _walk_entries(raw: list[Any], report: BundleReport
                  ) -> tuple[ChainWalk, dict[str, dict[str, Any]]]:
    """The chain walk over the bundle's entries (linked by recomputed hashes: only content
    is evidence here), and the live files the ledger records."""
    by_seq = _readable_entries(raw, report)
    walk = ChainWalk(report.add, _WORDING, dock_id=report.dock_id, follow_computed=True)
    files: dict[str, dict[str, Any]] = {}
    for seq in sorted(by_seq):
        e = by_seq[seq]
        try:
            computed = hash_entry(e)
        except Exception as exc:
            walk.unreadable(seq, e["hash"], exc)
            continue
        walk.entry(_Entry.of(e), computed)
        _track_file(seq, e, files, report)
    return walk, files


def _track_file(seq: int, e: Mapping[str, Any], files: dict[str, dict[str, Any]],
                report: BundleReport) -> None:
    data = e["data"]
    rel = data.get("stored_relpath")
    if not isinstance(rel, str):
        return
    if not _safe_relpath(rel):
        report.add("unsafe_path", f"seq {seq}",
                   f"stored_relpath {rel!r} is not a plain path inside the store")
    elif e["kind"] == "offloaded":
        files[rel] = {"size": data.get("size"), "blake3": data.get("blake3"), "seq": seq}
    elif e["kind"] == "purged":
        files.pop(rel, None)


def _check_checkpoints(raw: list[Any], key: Ed25519PublicKey | None, walk: ChainWalk,
                       report: BundleReport) -> None:
    trusted = None
    if key is not None:
        trusted = key.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw).hex()
    signed: set[int] = set()
    for i, cp in enumerate(raw):
        if not isinstance(cp, Mapping) or not isinstance(cp.get("seq"), int):
            report.add("bundle_unreadable", f"checkpoint #{i + 1}", "not a checkpoint")
            continue
        report.checkpoints += 1
        if _signed(cp, key, trusted, report):
            signed.add(cp["seq"])
        if report.dock_id is not None and cp.get("dock_id") != report.dock_id:
            report.add("dock_id_mismatch", f"seq {cp['seq']}",
                       f"checkpoint names dock {cp.get('dock_id')!r}")
        walk.checkpoint(cp["seq"], cp.get("hash"))
    walk.policy_gaps(signed)
    last_seq = walk.last_seq
    if last_seq and not signed:
        report.add("no_checkpoint", span(1, last_seq),
                   "no entry is covered by a valid signed checkpoint")
    elif report.last_signed_seq is not None and report.last_signed_seq < last_seq:
        report.notes.append(f"unsigned tail: entries {report.last_signed_seq + 1}-{last_seq}"
                            " are chained but not yet covered by a signed checkpoint")


def _signed(cp: Mapping[str, Any], key: Ed25519PublicKey | None, trusted: str | None,
            report: BundleReport) -> bool:
    """Whether the dock's key signs this checkpoint; untrusted and bad ones are named."""
    seq, where = cp["seq"], f"seq {cp['seq']}"
    if cp.get("key_id") != trusted:
        report.add("checkpoint_untrusted_key", where,
                   f"signed by key {str(cp.get('key_id'))[:16]}…, not the dock's key")
    if key is None or not signature_ok(key, cp):
        report.add("checkpoint_bad_signature", where,
                   "the signature does not verify with the dock's key: forged or altered")
        return False
    if report.last_signed_seq is None or seq > report.last_signed_seq:
        report.last_signed_seq = seq
    return True


def _safe_relpath(rel: str) -> bool:
    """A bundle is untrusted: its paths must not reach outside the store being checked."""
    parts = rel.split("/")
    return bool(rel) and "\0" not in rel and not rel.startswith("/") and all(
        p not in ("", ".", "..") for p in parts)


def _walk_store(root: Path, rel: str = "") -> Iterator[str]:
    with os.scandir(root / rel if rel else root) as it:
        for de in it:
            if de.name.startswith(PARTIAL_PREFIX):
                continue
            path = f"{rel}/{de.name}" if rel else de.name
            if de.is_dir(follow_symlinks=False):
                yield from _walk_store(root, path)
            else:
                yield path


def _check_store(store: Path, files: dict[str, dict[str, Any]], report: BundleReport) -> None:
    if not store.is_dir():
        report.add("store_missing", str(store), "the evidence store is not a directory")
        return
    try:
        found = set(_walk_store(store))
    except OSError as exc:
        report.add("unreadable_file", str(store), f"cannot list the store: {exc}")
        found = set()
    for rel, want in sorted(files.items()):
        report.files_checked += 1
        path = store / rel
        if path.is_symlink():
            report.add("unexpected_entry", rel, "a symbolic link where a stored file belongs")
            continue
        if rel not in found:
            report.add("missing_file", rel, f"recorded at seq {want['seq']} but not in the store")
            continue
        try:
            size, digest = hash_file(path)
        except OSError as exc:
            report.add("unreadable_file", rel, f"cannot read: {exc}")
            continue
        if size != want["size"]:
            report.add("size_mismatch", rel, f"{size} bytes on disk, {want['size']} recorded")
        elif digest != want["blake3"]:
            report.add("hash_mismatch", rel, f"content hashes to {digest[:16]}…, the ledger"
                       f" recorded {str(want['blake3'])[:16]}… (seq {want['seq']})")
    for rel in sorted(found - set(files)):
        report.add("extra_file", os.fsencode(rel).decode("utf-8", "backslashreplace"),
                   "a file in the store that the ledger does not record")
