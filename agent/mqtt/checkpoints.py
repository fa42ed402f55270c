"""Signed ledger checkpoints on MQTT, and the central side's check that each extends the last.

The dock publishes its newest checkpoint retained on `<prefix>/<dock_id>/checkpoint`, with
up to `PREVIOUS` older ones (`previous`, oldest first) so a consumer that missed some can
still link the new one to the last it saw. The signature covers the canonical message of
`agent.store.signing` (dock id, seq, entry hash, time) with the dock's Ed25519 key.

`judge(last, new)` is the central side's rule (pure). A checkpoint *extends* the last one
seen when it is the same checkpoint, or when its own chain of checkpoints contains the
last one (same seq, same hash). Everything else that contradicts the last one is an alarm:

    rolled_back     seq lower than the last checkpoint seen: the ledger was restored from
                    an older copy (or entries were deleted);
    rewritten       same seq, different hash; or the last seq lies inside the dock's
                    checkpoint history but with another hash, or is missing from it;
    key_changed     signed by a different key than before;
    bad_signature   the signature (of the checkpoint or one in `previous`) does not verify;
    wrong_dock      (`CheckpointWatch`) published under another dock's topic.

`unlinked` (not an alarm): the consumer missed more checkpoints than `previous` holds, so
the link cannot be shown from this message alone (compare with the custody events).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.custody.verifier import fingerprint, signature_ok
from agent.store.ledger import Checkpoint, iso_utc

PREVIOUS = 16
ALARMS = frozenset({"rolled_back", "rewritten", "key_changed", "bad_signature", "wrong_dock"})


def checkpoint_payload(dock_id: str, cps: Sequence[Checkpoint]) -> dict[str, Any]:
    """The retained message for the newest of `cps` (oldest first, not empty)."""
    latest = cps[-1]
    return {
        "dock_id": dock_id, "seq": latest.seq, "hash": latest.hash,
        "time": iso_utc(latest.time_us), "time_us": latest.time_us, "key_id": latest.key_id,
        "fingerprint": fingerprint(bytes.fromhex(latest.key_id)),
        "signature": latest.signature,
        "previous": [{"seq": c.seq, "hash": c.hash, "time_us": c.time_us,
                      "signature": c.signature}
                     for c in cps[-PREVIOUS - 1:-1] if c.key_id == latest.key_id],
    }


@dataclass(frozen=True)
class Judgement:
    verdict: str  # first, same, extends, unlinked, or one of ALARMS
    detail: str

    @property
    def alarm(self) -> bool:
        return self.verdict in ALARMS


def _signed(body: Mapping[str, Any], key: Ed25519PublicKey, item: Mapping[str, Any]) -> bool:
    return signature_ok(key, {"dock_id": body.get("dock_id"), "seq": item.get("seq"),
                              "hash": item.get("hash"), "time_us": item.get("time_us"),
                              "signature": item.get("signature")})


def judge(last: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Judgement:
    """Does checkpoint message `new` extend `last` (the last one accepted from that dock)?"""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(new.get("key_id"))))
        seq, digest = int(new["seq"]), str(new["hash"])
        previous = [p for p in new.get("previous") or [] if isinstance(p, Mapping)]
    except (ValueError, KeyError, TypeError):
        return Judgement("bad_signature", "the checkpoint names no usable key, seq or hash")
    for item in (new, *previous):
        if not _signed(new, key, item):
            return Judgement("bad_signature",
                             f"the signature of checkpoint seq {item.get('seq')} does not verify")
    if last is None:
        return Judgement("first", f"first checkpoint seen: seq {seq}")
    last_seq, last_hash = int(last["seq"]), str(last["hash"])
    if new.get("key_id") != last.get("key_id"):
        return Judgement("key_changed", f"signed by key {new.get('key_id')!s:.16}…, before by"
                         f" {last.get('key_id')!s:.16}…")
    if seq < last_seq:
        return Judgement("rolled_back", f"checkpoint seq {seq} is behind seq {last_seq} seen"
                         " before: the ledger was rolled back")
    if seq == last_seq:
        if digest == last_hash:
            return Judgement("same", f"seq {seq} again")
        return Judgement("rewritten", f"seq {seq} now signs another hash: history rewritten")
    history = {int(p["seq"]): str(p.get("hash")) for p in previous if isinstance(p.get("seq"), int)}
    if last_seq in history:
        if history[last_seq] == last_hash:
            return Judgement("extends", f"seq {last_seq} -> {seq}")
        return Judgement("rewritten", f"the dock's checkpoint at seq {last_seq} now signs"
                         " another hash: history rewritten")
    if history and min(history) < last_seq:
        return Judgement("rewritten", f"the dock no longer has the checkpoint at seq {last_seq}"
                         " it published before: its ledger was rolled back and re-grown")
    return Judgement("unlinked", f"seq {last_seq} -> {seq}: too many checkpoints missed to"
                     " link them from this message")


class CheckpointWatch:
    """Central side: the last accepted checkpoint per dock, and every alarm raised.

    With `state_file` the last accepted checkpoints survive a restart of the watcher (a
    dock rolled back while nobody watched is still caught): loaded at start, rewritten
    atomically after each accepted checkpoint.
    """

    def __init__(self, state_file: Path | None = None) -> None:
        self.state_file = state_file
        self.last: dict[str, dict[str, Any]] = {}
        self.alarms: dict[str, list[Judgement]] = {}
        if state_file is not None and state_file.exists():
            try:
                saved = json.loads(state_file.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                raise CheckpointStateError(f"cannot read {state_file}: {exc}") from exc
            if not isinstance(saved, dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("seq"), int)
                    for v in saved.get("last", {}).values()):
                raise CheckpointStateError(f"{state_file} is not a checkpoint state file")
            self.last = saved["last"]

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"last": self.last}, sort_keys=True), "utf-8")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(self.state_file)

    def observe(self, dock_id: str, body: Mapping[str, Any]) -> Judgement:
        if body.get("dock_id") != dock_id:
            j = Judgement("wrong_dock", f"a checkpoint of dock {body.get('dock_id')!r} was"
                          f" published as dock {dock_id!r}")
        else:
            j = judge(self.last.get(dock_id), body)
        if j.alarm:
            self.alarms.setdefault(dock_id, []).append(j)
        else:
            # Alarms keep the last good checkpoint: a rollback must not become the new truth.
            new = {k: body.get(k) for k in ("seq", "hash", "key_id", "time")}
            if self.last.get(dock_id) != new:
                self.last[dock_id] = new
                self._save()
        return j


class CheckpointStateError(Exception):
    """The watcher's state file cannot be used."""
