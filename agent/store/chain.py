"""One walk of the custody hash chain, shared by every verifier.

It also holds what a verifier must re-derive byte for byte: the entry hash and the
checkpoint message (see docs/custody-store.md).

The dock's own check (`agent.store.verify`, behind `dockctl verify` and the fixity audit)
reads entries from its database; the third party's check (`agent.custody.verifier`,
behind `dock-verify`) reads them from an exported bundle. Both feed them here in seq
order, and `ChainWalk` finds what the chain itself shows: gaps, broken links, edited
entries, entries of another dock, the signing keys and checkpoint policy the chain
records, and which checkpoints that policy requires. Pure code: no I/O, no database.

Each verifier keeps its own wording of a finding (`Wording`), so `dockctl` and
`dock-verify` print what they always printed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from blake3 import blake3

from agent.store.canonical import canonical_bytes

GENESIS_HASH = "0" * 64
ENTRY_TYPE = "dock-agent/ledger-entry"
CHECKPOINT_TYPE = "dock-agent/ledger-checkpoint"
# The hashed fields of an entry, in the order of the documented encoding; `hash` last.
ENTRY_FIELDS = ("seq", "time_us", "dock_id", "kind", "recorder", "officer", "bay",
                "session_id", "data", "prev_hash", "hash")
_POLICY_KINDS = ("signing_key", "checkpoint_policy")

AddFinding = Callable[[str, str, str], None]


def hash_entry(fields: Mapping[str, Any]) -> str:
    """BLAKE3 hex over the canonical encoding of one entry's fields (without `hash`)."""
    doc = {"type": ENTRY_TYPE, "v": 1, **{k: fields[k] for k in ENTRY_FIELDS[:-1]}}
    return blake3(canonical_bytes(doc)).hexdigest()


def checkpoint_message(dock_id: str, seq: int, entry_hash: str, time_us: int) -> bytes:
    """The bytes a checkpoint signs: the canonical JSON of the signed entry's identity."""
    return canonical_bytes({"type": CHECKPOINT_TYPE, "v": 1, "dock_id": dock_id, "seq": seq,
                            "hash": entry_hash, "time_us": time_us})


def span(a: int, b: int) -> str:
    return f"seq {a}" if a == b else f"seq {a}-{b}"


class Link(Protocol):
    """What the walk reads of one entry (a `LedgerEntry` or a bundle entry)."""

    @property
    def seq(self) -> int: ...
    @property
    def dock_id(self) -> object: ...
    @property
    def kind(self) -> object: ...
    @property
    def data(self) -> Mapping[str, Any]: ...
    @property
    def prev_hash(self) -> object: ...
    @property
    def hash(self) -> object: ...


@dataclass(frozen=True)
class Wording:
    """A verifier's phrasing of each finding (`str.format` templates)."""

    gap: str  # {last} {seq}
    unreadable: str  # {error}
    chain_broken: str  # {got} {what} {want}
    altered: str  # {computed} {stored}
    dock_id: str  # {got} {want}
    truncated: str  # {seq} {last}
    checkpoint_entry_missing: str
    checkpoint_mismatch: str  # {signed} {entry}
    checkpoint_missing: str  # {every}


@dataclass
class ChainWalk:
    """Feed entries in ascending seq order with `entry` (or `unreadable`), then check the
    checkpoints with `checkpoint` and the recorded policy with `policy_gaps`.

    `follow_computed`: link each entry to the hash its content gives (a bundle, where
    only content is evidence) rather than the hash stored with it (the dock's database).
    `keep`: the seqs whose hashes are kept for checkpoint checks (None: all).
    """

    add: AddFinding
    wording: Wording
    dock_id: str | None = None
    follow_computed: bool = False
    keep: Container[int] | None = None
    # What the walk found so far (read them after the last entry).
    hashes: dict[int, str] = field(default_factory=dict, init=False)
    chain_keys: dict[str, int] = field(default_factory=dict, init=False)  # key -> first seq
    must_sign: list[int] = field(default_factory=list, init=False)
    every: int | None = field(default=None, init=False)
    last_seq: int = field(default=0, init=False)
    _prev: str = field(default=GENESIS_HASH, init=False)
    _expected: int = field(default=1, init=False)

    def _gap(self, seq: int) -> bool:
        if seq == self._expected:
            return False
        self.add("entry_missing", span(self._expected, seq - 1),
                 self.wording.gap.format(last=self._expected - 1, seq=seq))
        return True

    def _advance(self, seq: int, link_hash: str) -> None:
        if self.keep is None or seq in self.keep:
            self.hashes[seq] = link_hash
        self._prev, self._expected, self.last_seq = link_hash, seq + 1, seq

    def unreadable(self, seq: int, stored_hash: object, error: object) -> None:
        """An entry whose content cannot be read or encoded: the chain goes on from the
        hash stored with it."""
        self._gap(seq)
        self.add("entry_unreadable", f"seq {seq}", self.wording.unreadable.format(error=error))
        self._advance(seq, str(stored_hash))

    def entry(self, e: Link, computed: str) -> None:
        """A readable entry and the hash its content gives."""
        seq, w = e.seq, self.wording
        if not self._gap(seq) and e.prev_hash != self._prev:
            what = "the genesis hash" if seq == 1 else f"the hash of entry {seq - 1}"
            self.add("chain_broken", f"seq {seq}", w.chain_broken.format(
                got=str(e.prev_hash)[:16], what=what, want=self._prev[:16]))
        if computed != e.hash:
            self.add("entry_altered", f"seq {seq}", w.altered.format(
                computed=computed[:16], stored=str(e.hash)[:16]))
        if self.dock_id is not None and e.dock_id != self.dock_id:
            self.add("dock_id_mismatch", f"seq {seq}",
                     w.dock_id.format(got=e.dock_id, want=self.dock_id))
        if e.kind in _POLICY_KINDS:
            self._policy(seq, e.data)
        if self.every is not None and seq % self.every == 0:
            self.must_sign.append(seq)
        self._advance(seq, computed if self.follow_computed else str(e.hash))

    def _policy(self, seq: int, data: Mapping[str, Any]) -> None:
        kid, every = data.get("key_id"), data.get("checkpoint_every")
        if isinstance(kid, str):
            self.chain_keys.setdefault(kid, seq)
        if isinstance(every, int) and every > 0:
            self.every = every

    def checkpoint(self, seq: int, signed_hash: object) -> None:
        """A checkpoint must sign an entry that is there, with that entry's hash."""
        w = self.wording
        if seq > self.last_seq:
            self.add("entries_truncated", span(self.last_seq + 1, seq),
                     w.truncated.format(seq=seq, last=self.last_seq))
        elif seq not in self.hashes:
            self.add("checkpoint_entry_missing", f"seq {seq}", w.checkpoint_entry_missing)
        elif self.hashes[seq] != signed_hash:
            self.add("checkpoint_mismatch", f"seq {seq}", w.checkpoint_mismatch.format(
                signed=str(signed_hash)[:16], entry=self.hashes[seq][:16]))

    def policy_gaps(self, signed: Container[int]) -> None:
        """Every checkpoint the chain's recorded policy requires must be among `signed`."""
        for seq in self.must_sign:
            if seq not in signed:
                self.add("checkpoint_missing", f"seq {seq}",
                         self.wording.checkpoint_missing.format(every=self.every))


__all__ = ["CHECKPOINT_TYPE", "ENTRY_FIELDS", "ENTRY_TYPE", "GENESIS_HASH", "ChainWalk",
           "Link", "Wording", "checkpoint_message", "hash_entry", "span"]
