"""The recorder's claims against what the dock sees: content, deletes, listings, times,
sizes. Real files, the real offload engine and SQLite ledger; the FUSE fault view where the
recorder's filesystem must misbehave. (Through whole docking sessions on ptys:
tests/session/test_offload_custody.py.)"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.offload import Offloader
from agent.offload.times import EARLIEST_US, FUTURE_SLACK_US, decide
from agent.store.ledger import current_us

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


class LyingWiper(LoggingWiper):
    """Answers every delete as done and deletes nothing."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        self.deleted.append(name)


class HidingWiper(LoggingWiper):
    """Deletes nothing and hides what it kept from its listing (a recorder lying twice)."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        self.deleted.append(name)

    async def listed(self) -> set[bytes]:
        return set()


def kinds(db_path: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) for r in
            rows(db_path, "SELECT data FROM ledger WHERE kind = ? ORDER BY seq", (kind,))]


# --- content, not name and size -------------------------------------------------------

@pytest.mark.parametrize("size_change", [0, 17])
async def test_a_changed_file_is_a_new_version_and_is_never_wiped(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path,
    size_change: int,
) -> None:
    make_file(source, "DCIM/A.MP4", 4096, seed=b"one")
    listing = {b"DCIM/A.MP4": (T0_MS - 5000, T0_MS)}
    await make_offloader().offload(ctx(), source, recordings=listing)
    # same name and listed times; same size or not, other bytes
    new = make_file(source, "DCIM/A.MP4", 4096 + size_change, seed=b"two")
    wiper = LoggingWiper(source)
    s = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s2"), source, recordings=listing, wiper=wiper)
    assert s.already_stored == [] and len(s.stored) == 1 and s.stored[0].changed
    assert wiper.deleted == [] and (source / "DCIM/A.MP4").read_bytes() == new
    index = check_store_invariants(db_path, store)
    assert len(index) == 2
    replaced = json.loads(index[1]["source_changed"])["replaces"]
    assert replaced["file_id"] == index[0]["id"]
    (fault,) = kinds(db_path, "fault")
    assert fault["code"] == "file_changed" and "DCIM/A.MP4" in fault["reason"]
    # unchanged since: matched by content as the new version, still never wiped
    s3 = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s3"), source, recordings=listing, wiper=wiper)
    assert s3.already_stored == [b"DCIM/A.MP4"] and s3.stored == [] and wiper.deleted == []


async def test_a_file_recorded_as_wiped_that_is_still_there_is_named_not_copied_again(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    (name,) = make_footage(source, [MiB])
    s = await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=HidingWiper(source))
    assert s.wiped == [name]  # the recorder hid it: nothing the dock could tell then
    s2 = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s2"), source, wiper=HidingWiper(source))
    assert s2.stored == [] and s2.already_stored == [name]
    (problem,) = s2.wipe_failed
    assert problem.name == name and "still holds it" in problem.reason
    assert problem.detail is not None and problem.detail["firmware_claim"] == "deleted"
    assert len(rows(db_path, "SELECT id FROM evidence_files")) == 1


# --- deletes are confirmed ---------------------------------------------------------------

async def test_a_lying_delete_leaves_no_wiped_entry_and_no_intent(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    files = make_footage(source, [MiB, 10])
    s = await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=LyingWiper(source))
    assert s.wiped == [] and sorted(p.name for p in s.wipe_failed) == sorted(files)
    assert all(p.detail and p.detail["firmware_claim"] == "deleted" for p in s.wipe_failed)
    assert kinds(db_path, "wiped") == []
    assert rows(db_path, "SELECT * FROM wipe_intents") == []
    assert all(r["wiped"] == 0 for r in rows(db_path, "SELECT wiped FROM evidence_files"))


# --- one entry at a time -----------------------------------------------------------------

async def test_an_undecided_delete_under_an_unlistable_directory_stays_undecided(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path,
    fault_mount: Callable[..., Any],
) -> None:
    from .test_wipe_safety import LosesRequest

    (name,) = make_footage(source, [MiB], sub="DCIM/101")
    make_footage(source, [MiB])
    await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=LosesRequest())
    assert name in {bytes(r["source_name"]) for r in rows(db_path, "SELECT * FROM wipe_intents")}
    view = await fault_mount(source, unlistable=["DCIM/101"])
    s = await make_offloader().offload(ctx(first=False, session="s2"), view)
    assert [p.name for p in s.failed] == [b"DCIM/101"]
    assert "errno 13" in s.failed[0].reason
    # the file could not be seen, which proves nothing: not recorded as wiped
    assert kinds(db_path, "wiped") == []
    assert name in {bytes(r["source_name"]) for r in rows(db_path, "SELECT * FROM wipe_intents")}


async def test_an_undecided_delete_under_a_refused_directory_stays_undecided(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path, tmp_path: Path,
) -> None:
    """A directory swapped for a symlink is refused, not walked: the files below it were
    not seen, which proves nothing about a delete asked for earlier."""
    from .test_wipe_safety import LosesRequest

    (name,) = make_footage(source, [MiB], sub="DCIM/101")
    make_footage(source, [MiB])
    await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=LosesRequest())
    assert name in {bytes(r["source_name"]) for r in rows(db_path, "SELECT * FROM wipe_intents")}
    os.rename(source / "DCIM/101", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", source / "DCIM/101")
    s = await make_offloader().offload(ctx(first=False, session="s2"), source)
    assert [(p.name, p.reason) for p in s.refused] == [(b"DCIM/101", "symlink")]
    assert kinds(db_path, "wiped") == []
    assert name in {bytes(r["source_name"]) for r in rows(db_path, "SELECT * FROM wipe_intents")}


# --- recording times -----------------------------------------------------------------------

def test_time_rule() -> None:
    now = current_us()
    ok = decide((T0_MS - 1000, T0_MS), 0, now)
    assert (ok.start_us, ok.end_us, ok.source, ok.rejected) == (
        (T0_MS - 1000) * 1000, T0_MS * 1000, "recorder", ())
    for bad in ((2**63 - 1, 2**63 - 1), (253_402_300_800_000, 253_402_300_800_000),
                (0, T0_MS), (T0_MS, T0_MS - 1)):
        t = decide(bad, T0_MS * 1_000_000, now)
        assert t.source == "mtime" and t.end_us == T0_MS * 1000 and t.rejected
    t = decide(None, -5, now)
    assert t.source == "dock" and t.end_us == now and t.rejected[0].raw == "-5"
    edge = decide(None, (now + FUTURE_SLACK_US) * 1000, now)
    assert edge.source == "mtime"
    assert decide(None, (EARLIEST_US - 1) * 1000, now).source == "dock"


async def test_out_of_range_mtime_falls_back_to_the_offload_date(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    make_file(source, "DCIM/A.MP4", 1000)
    os.utime(source / "DCIM/A.MP4", ns=(0, 0))  # a recorder whose clock never ran
    s = await make_offloader().offload(ctx(), source)
    assert s.outcome == "complete" and s.stored[0].time_source == "dock"
    (row,) = check_store_invariants(db_path, store)
    assert row["rec_start_us"] is None and row["rec_end_us"] is None
    (entry,) = kinds(db_path, "offloaded")
    assert entry["rejected_times"] == [{"field": "mtime_ns", "raw": "0",
                                        "reason": "before 2000-01-01"}]
    (fault,) = kinds(db_path, "fault")
    assert fault["code"] == "recording_time_invalid"


# --- admission per file ---------------------------------------------------------------------

async def test_a_file_larger_than_its_storage_is_refused_and_the_rest_stored(
    make_offloader: Callable[..., Offloader], source: Path, small_store: Path
) -> None:
    files = make_footage(source, [MiB, 2 * MiB])
    capacity = os.statvfs(source).f_blocks * os.statvfs(source).f_frsize
    with open(source / "DCIM/100BWC/HUGE.MP4", "wb") as fh:
        fh.truncate(capacity + 1)
    s = await make_offloader(small_store).offload(ctx(), source)
    assert s.outcome == "complete"
    assert sorted(f.name for f in s.stored) == sorted(files)
    (refused,) = s.refused
    assert refused.name == b"DCIM/100BWC/HUGE.MP4" and "whole storage" in refused.reason


async def test_an_undecided_delete_of_a_name_reused_with_other_content_is_a_wipe(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    from .test_wipe_safety import DeletesThenLosesAnswer

    (name,) = make_footage(source, [4096])
    first = await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=DeletesThenLosesAnswer(source))
    assert first.wiped == [] and not (source / name.decode()).exists()
    # a new recording reuses the name, with the same size: name and size prove nothing
    make_file(source, name, 4096, seed=b"a new recording")
    s = await make_offloader().offload(ctx(first=False, session="s2"), source)
    assert s.wiped == [name] and len(s.stored) == 1 and s.stored[0].changed is None
    (wiped,) = kinds(db_path, "wiped")
    assert wiped["confirmed_by"] == "the name holds other content at the next docking"
    assert rows(db_path, "SELECT * FROM wipe_intents") == []
    assert len(check_store_invariants(db_path, store)) == 2
