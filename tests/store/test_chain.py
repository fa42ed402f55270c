"""The one chain walk both verifiers use, as pure code: entries in, findings out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agent.store.chain import GENESIS_HASH, ChainWalk, Wording, hash_entry
from agent.store.ledger import LedgerEntry

WORDS = Wording(gap="gap {last}->{seq}", unreadable="bad {error}",
                chain_broken="link {got} {want}", altered="edit {computed} {stored}",
                dock_id="dock {got!r} {want!r}", truncated="cut {seq} {last}",
                checkpoint_entry_missing="gone", checkpoint_mismatch="sig {signed} {entry}",
                checkpoint_missing="policy {every}")


E = LedgerEntry  # the ledger's own entry type, as the verifiers read it


def chain(n: int) -> list[E]:
    out, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        kind, data = ("checkpoint_policy", {"key_id": "k1", "checkpoint_every": 2}) \
            if seq == 1 else ("docked", {"n": seq})
        e = E(seq, seq, "d1", kind, None, None, None, None, data, prev, "")
        e = replace(e, hash=hash_entry(vars(e)))
        out.append(e)
        prev = e.hash
    return out


def walk(entries: list[E], **kw: Any) -> tuple[ChainWalk, list[tuple[str, str]]]:
    found: list[tuple[str, str]] = []
    w = ChainWalk(lambda kind, where, _: found.append((kind, where)), WORDS, dock_id="d1",
                  **kw)
    for e in entries:
        w.entry(e, hash_entry(vars(e)))
    return w, found


def test_an_intact_chain_has_no_findings_and_records_its_policy() -> None:
    w, found = walk(chain(5))
    assert found == []
    assert (w.last_seq, w.every, w.must_sign, w.chain_keys) == (5, 2, [2, 4], {"k1": 1})
    w.policy_gaps({2})
    w.checkpoint(2, w.hashes[2])
    assert found == [("checkpoint_missing", "seq 4")]


def test_gaps_edits_and_foreign_entries_are_named() -> None:
    es = chain(6)
    es[2] = replace(es[2], data={"n": 99})  # edited, stored hash kept
    es[4] = replace(es[4], dock_id="d2")
    del es[3]
    _, found = walk(es)
    assert found == [("entry_altered", "seq 3"), ("entry_missing", "seq 4"),
                     ("entry_altered", "seq 5"), ("dock_id_mismatch", "seq 5")]


def test_following_content_hashes_also_breaks_the_next_link() -> None:
    es = chain(3)
    es[1] = replace(es[1], data={"n": 99})
    _, stored = walk(es)
    _, computed = walk(es, follow_computed=True)
    assert stored == [("entry_altered", "seq 2")]
    assert computed == [("entry_altered", "seq 2"), ("chain_broken", "seq 3")]


def test_checkpoints_beyond_or_against_the_chain() -> None:
    w, found = walk(chain(3), keep={2})
    w.checkpoint(5, "x")
    w.checkpoint(3, "x")
    w.checkpoint(2, "x")
    assert found == [("entries_truncated", "seq 4-5"), ("checkpoint_entry_missing", "seq 3"),
                     ("checkpoint_mismatch", "seq 2")]
