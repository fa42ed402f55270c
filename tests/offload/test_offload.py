"""Offload end to end on real files and a real SQLite database."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from agent.offload import Offloader, OffloadProgress
from agent.store.db import Database

from .offload_helpers import (
    T0_MS,
    LoggingWiper,
    check_store_invariants,
    ctx,
    make_file,
    make_footage,
    rows,
)

MiB = 1 << 20


async def test_bit_for_bit_with_custody(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    files = make_footage(source, [0, 1, 3 * MiB + 17, 9 * MiB + 5])
    recordings = {name: (T0_MS + i * 1000, T0_MS + i * 1000 + 500)
                  for i, name in enumerate(sorted(files))}
    seen: list[OffloadProgress] = []
    o = make_offloader()
    s = await o.offload(ctx(), source, recordings=recordings, on_progress=seen.append)
    assert s.outcome == "complete", s.detail
    assert [f.name for f in s.stored] == sorted(files)
    assert not s.failed and not s.refused and not s.wiped
    assert s.bytes_copied == sum(len(d) for d in files.values())
    index = check_store_invariants(db_path, store)
    assert len(index) == len(files)
    for row, (name, data) in zip(index, sorted(files.items()), strict=True):
        assert bytes(row["source_name"]) == name
        assert (store / row["stored_relpath"]).read_bytes() == data
        assert row["blake3"] == blake3.blake3(data).hexdigest()
        assert row["stored_relpath"].startswith("U-3/RC000001/O-17/2026-09-")
        assert row["rec_start_us"] == recordings[name][0] * 1000
        assert row["rec_end_us"] == recordings[name][1] * 1000
        assert row["late"] == 0 and row["verify_state"] == "ok"
        assert row["session_id"] == "s1" and row["bay"] == "bay-1"
    for sf in s.stored:
        assert sf.time_source == "recorder" and sf.verified is True and sf.changed is None
    # store hygiene: directories 0750, no partials, empty journal
    for dirpath, _dirs, names in os.walk(store):
        if Path(dirpath) != store:
            assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o750
        assert not [n for n in names if n.startswith(".partial-")]
    assert rows(db_path, "SELECT * FROM offload_journal") == []
    # progress: final snapshot complete
    last = seen[-1]
    assert last.bytes_done == last.bytes_total == s.bytes_copied
    assert last.files_done == last.files_total == len(files)


async def test_second_docking_copies_nothing(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    files = make_footage(source, [MiB, 2 * MiB])
    o = make_offloader()
    first = await o.offload(ctx(), source)
    assert len(first.stored) == 2
    second = await o.offload(ctx(session="s2", first=False), source)
    assert second.outcome == "complete"
    assert second.stored == [] and sorted(second.already_stored) == sorted(files)
    assert second.bytes_copied == 0
    assert len(rows(db_path, "SELECT id FROM evidence_files")) == 2


async def test_same_name_new_content_is_stored_again(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    """A recorder that reuses a name with the same size (no listing, other mtime)."""
    make_file(source, "DCIM/A.MP4", 4096, seed=b"one")
    o = make_offloader()
    await o.offload(ctx(), source)
    make_file(source, "DCIM/A.MP4", 4096, seed=b"two", mtime_ms=T0_MS + 5000)
    s = await o.offload(ctx(session="s2"), source)
    assert len(s.stored) == 1 and s.stored[0].stored_relpath != ""
    index = check_store_invariants(db_path, store)
    assert len(index) == 2 and index[0]["blake3"] != index[1]["blake3"]
    assert index[0]["stored_relpath"] != index[1]["stored_relpath"]
    # same bytes but a touched mtime: the hash says it is already stored
    os.utime(source / "DCIM/A.MP4", ns=(1, 1))
    s3 = await o.offload(ctx(session="s3"), source)
    assert s3.stored == [] and s3.already_stored == [b"DCIM/A.MP4"]


async def test_wipe_only_when_enabled(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    files = make_footage(source, [MiB, 10])
    wiper = LoggingWiper(source)
    s = await make_offloader(wipe_after_offload=False).offload(ctx(), source, wiper=wiper)
    assert s.wiped == [] and wiper.deleted == []
    s2 = await make_offloader(wipe_after_offload=True).offload(
        ctx(session="s2"), source, wiper=wiper)
    # both files were stored by the first run; the second wipes them as already stored
    assert sorted(s2.already_stored) == sorted(files) and sorted(s2.wiped) == sorted(files)
    assert sorted(wiper.deleted) == sorted(files)
    assert all(r["wiped"] == 1 for r in rows(db_path, "SELECT wiped FROM evidence_files"))
    assert not any((source / n.decode()).exists() for n in files)


async def test_wipe_after_store(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    files = make_footage(source, [2 * MiB, 3])
    wiper = LoggingWiper(source)
    s = await make_offloader(wipe_after_offload=True).offload(ctx(), source, wiper=wiper)
    assert sorted(s.wiped) == sorted(files)
    check_store_invariants(db_path, store)
    per_file: dict[int, list[str]] = {}
    for r in rows(db_path, "SELECT kind, data FROM ledger ORDER BY seq"):
        per_file.setdefault(json.loads(r["data"])["file_id"], []).append(r["kind"])
    # per file: stored, then verified, then wiped - in that order (files may interleave)
    assert list(per_file.values()) == [["offloaded", "verified", "wiped"]] * 2


async def test_wipe_refused_is_reported(
    make_offloader: Callable[..., Offloader], source: Path
) -> None:
    make_footage(source, [100])

    class Refusing:
        async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
            raise RuntimeError("recorder said mismatch")

        async def listed(self) -> set[bytes]:
            return set()

    s = await make_offloader(wipe_after_offload=True).offload(ctx(), source, wiper=Refusing())
    assert s.wiped == [] and len(s.wipe_failed) == 1
    assert "mismatch" in s.wipe_failed[0].reason


@pytest.mark.parametrize(
    ("mode", "first", "rate", "expected"),
    [("always", False, 0.1, "ok"), ("off", True, 0.1, "unverified"),
     ("first-docking", True, 0.1, "ok"), ("first-docking", False, 0.1, "unverified"),
     ("sampled", False, 1.0, "ok"), ("sampled", True, 0.0, "unverified")],
)
async def test_verify_modes(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path,
    mode: str, first: bool, rate: float, expected: str,
) -> None:
    make_footage(source, [MiB, 2])
    o = make_offloader(verify=mode, verify_sample_rate=rate)
    await o.offload(ctx(first=first), source)
    states = {r["verify_state"] for r in rows(db_path, "SELECT verify_state FROM evidence_files")}
    assert states == {expected}


async def test_verify_detects_a_damaged_store_copy(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db: Database
) -> None:
    """The verifier really re-reads: a stored file changed after commit fails it."""
    import threading

    from agent.offload.buffers import BufferPool
    from agent.offload.rehash import verify_stored

    make_footage(source, [MiB])
    s = await make_offloader(verify="off").offload(ctx(), source)
    path = store / s.stored[0].stored_relpath
    ok, _ = verify_stored(path, s.stored[0].size, bytes.fromhex(s.stored[0].blake3_hex),
                          BufferPool(1 << 20, 1), threading.Event())
    assert ok
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"X")
    ok, detail = verify_stored(path, s.stored[0].size, bytes.fromhex(s.stored[0].blake3_hex),
                               BufferPool(1 << 20, 1), threading.Event())
    assert not ok and "BLAKE3" in detail


async def test_late_offload_recorded(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    make_file(source, "DCIM/OLD.MP4", 10)  # recorded at T0 (mtime), long before now
    now_ms = int(time.time() * 1000)
    make_file(source, "DCIM/NEW.MP4", 10)
    recordings = {b"DCIM/NEW.MP4": (now_ms - 60_000, now_ms - 1000)}
    s = await make_offloader(deadline_h=24).offload(ctx(), source, recordings=recordings)
    by_name = {f.name: f for f in s.stored}
    assert by_name[b"DCIM/OLD.MP4"].late and by_name[b"DCIM/OLD.MP4"].time_source == "mtime"
    assert not by_name[b"DCIM/NEW.MP4"].late
    index = {bytes(r["source_name"]): r for r in rows(db_path, "SELECT * FROM evidence_files")}
    old, new = index[b"DCIM/OLD.MP4"], index[b"DCIM/NEW.MP4"]
    assert old["late"] == 1 and old["rec_start_us"] is None and old["rec_end_us"] == T0_MS * 1000
    assert old["deadline_us"] == (T0_MS + 24 * 3600_000) * 1000
    expected_late = old["offload_end_us"] / 1e6 - old["deadline_us"] / 1e6
    assert abs(old["late_by_s"] - expected_late) < 1
    assert new["late"] == 0 and new["late_by_s"] == 0
    assert new["deadline_us"] == (now_ms - 1000 + 24 * 3600_000) * 1000


async def test_same_base_name_in_two_directories(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    a = make_file(source, "DCIM/100/A.MP4", 100, seed=b"a")
    b = make_file(source, "DCIM/101/A.MP4", 100, seed=b"b")
    s = await make_offloader().offload(ctx(), source)
    paths = {f.name: f.stored_relpath for f in s.stored}
    assert paths[b"DCIM/100/A.MP4"] != paths[b"DCIM/101/A.MP4"]
    assert (store / paths[b"DCIM/100/A.MP4"]).read_bytes() == a
    assert (store / paths[b"DCIM/101/A.MP4"]).read_bytes() == b
    check_store_invariants(db_path, store)


async def test_listing_after_mtime_docking_is_not_copied_twice(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    files = make_footage(source, [MiB])
    o = make_offloader()
    first = await o.offload(ctx(), source)  # storage-only: no listing, mtime times
    assert first.stored[0].time_source == "mtime"
    name = next(iter(files))
    s = await o.offload(ctx(session="s2"), source, recordings={name: (T0_MS - 9000, T0_MS)})
    assert s.stored == [] and s.already_stored == [name] and s.bytes_copied == 0
    assert len(rows(db_path, "SELECT id FROM evidence_files")) == 1


async def test_simulator_footage_matches_its_expected_hashes(
    make_offloader: Callable[..., Offloader], tmp_path: Path, store: Path, db_path: Path
) -> None:
    """Independent check: the simulator's generator knows what every file must hash to."""
    from hw_sim.footage import expected_files
    from hw_sim.spec import FootageSpec, RecorderSpec
    from hw_sim.storage import RecorderStorage

    spec = RecorderSpec(serial="SIMREC01", footage=FootageSpec(
        sizes=(3 * MiB + 11, 0, 700_001), start_ms=T0_MS))
    storage = RecorderStorage(spec, tmp_path / "sim")
    storage.materialise()
    listing = {e.name: (e.start_ms, e.end_ms) for e in storage.list_entries()}
    s = await make_offloader().offload(ctx("SIMREC01"), storage.root, recordings=listing)
    assert s.outcome == "complete"
    got = {f.name: f.blake3_hex for f in s.stored}
    assert got == {e.name: e.blake3_hex for e in expected_files(spec)}
    index = check_store_invariants(db_path, store)
    assert {(bytes(r["source_name"]), r["rec_start_us"]) for r in index} == {
        (e.name, e.start_ms * 1000) for e in expected_files(spec)}
