"""The power-cut trials' custody oracle (hil_power.check_custody) on made-up findings: it
must pass a clean run and name each kind of violation (no qemu needed)."""

from __future__ import annotations

import copy
from typing import Any

from .hil_fat import ImageFile
from .hil_power import check_custody

A = ImageFile("DCIM/100BWC/A.MP4", 10, "a" * 64)
B = ImageFile("DCIM/100BWC/B.MP4", 20, "b" * 64)


def clean() -> dict[str, Any]:
    def entry(seq: int, kind: str, **data: Any) -> dict[str, Any]:
        return {"seq": seq, "kind": kind, "data": data}

    return {
        "final_state": "released", "verify_rc": 0, "journal": 0, "wipe_intents": 0,
        "partials": [], "write_cache": "write back",
        "evidence": [
            {"id": 1, "source_name": A.name, "size": 10, "blake3": A.blake3,
             "stored_relpath": "x/A.MP4", "verify_state": "ok", "wiped": 1},
            {"id": 2, "source_name": B.name, "size": 20, "blake3": B.blake3,
             "stored_relpath": "x/B.MP4", "verify_state": "ok", "wiped": 0},
        ],
        "stored_hashes": {"1": A.blake3, "2": B.blake3},
        "ledger": [entry(1, "docked"), entry(2, "offloaded", file_id=1),
                   entry(3, "verified", file_id=1, ok=True), entry(4, "wiped", file_id=1),
                   entry(5, "docked"), entry(6, "undocked", docked_seq=1),
                   entry(7, "offloaded", file_id=2)],
    }


def test_a_clean_run_passes() -> None:
    assert check_custody([A, B], {B.name: B.blake3}, clean()) == []


def test_each_violation_is_named() -> None:
    r = clean()
    r["stored_hashes"]["1"] = "0" * 64  # the stored copy rotted
    assert any("hashes to" in p for p in check_custody([A, B], {B.name: B.blake3}, r))

    r = clean()
    r["evidence"][0]["verify_state"] = "unverified"
    r["ledger"] = [e for e in r["ledger"] if e["kind"] != "verified"]
    assert any("without a verified" in p for p in check_custody([A, B], {B.name: B.blake3}, r))

    r = clean()
    del r["evidence"][0]
    assert any("LOST" in p for p in check_custody([A, B], {B.name: B.blake3}, r))

    r = clean()
    assert any("altered" in p for p in check_custody([A, B], {B.name: "c" * 64}, r))

    r = copy.deepcopy(clean())
    r["ledger"][5]["data"] = {}  # the cut docking at seq 1 never ended
    assert any("never ended" in p for p in check_custody([A, B], {B.name: B.blake3}, r))

    r = clean()
    r["verify_rc"] = 1
    assert any("verify --deep" in p for p in check_custody([A, B], {B.name: B.blake3}, r))
