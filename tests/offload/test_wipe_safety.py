"""Wiping a recorder is irreversible: it happens only after the stored copy is verified, and
a delete whose answer was lost (crash, unplug, silence) is settled by looking at the
recorder at its next docking — never left unrecorded, never assumed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from agent.offload import Offloader

from .offload_helpers import LoggingWiper, check_store_invariants, ctx, make_footage, rows

MiB = 1 << 20


class DeletesThenLosesAnswer(LoggingWiper):
    """The recorder carries out the delete, but its answer never arrives."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        await super().delete(name, size, blake3_digest)
        raise TimeoutError("no answer from the recorder")


class LosesRequest:
    """The command never reaches the recorder: nothing is deleted, no answer comes."""

    async def delete(self, name: bytes, size: int, blake3_digest: bytes) -> None:
        raise TimeoutError("no answer from the recorder")

    async def listed(self) -> set[bytes]:
        raise TimeoutError("no answer from the recorder")


def intents(db_path: Path) -> list[bytes]:
    return [bytes(r["source_name"]) for r in rows(db_path, "SELECT source_name FROM wipe_intents")]


async def test_delete_done_but_unanswered_is_recorded_at_next_docking(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    (name,) = make_footage(source, [MiB])
    first = await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=DeletesThenLosesAnswer(source))
    assert first.wiped == [] and len(first.wipe_failed) == 1
    assert not (source / name.decode()).exists()  # gone from the recorder...
    assert rows(db_path, "SELECT wiped FROM evidence_files")[0]["wiped"] == 0
    assert intents(db_path) == [name]  # ...and the undecided delete is on record

    second = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s2"), source, wiper=LoggingWiper(source))
    assert second.wiped == [name]
    assert intents(db_path) == []
    wiped = rows(db_path, "SELECT data FROM ledger WHERE kind = 'wiped'")
    assert len(wiped) == 1
    assert "absent from the recorder" in json.loads(wiped[0]["data"])["confirmed_by"]
    check_store_invariants(db_path, store)


async def test_delete_never_done_is_retried_at_next_docking(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    (name,) = make_footage(source, [MiB])
    first = await make_offloader(wipe_after_offload=True).offload(
        ctx(), source, wiper=LosesRequest())
    assert len(first.wipe_failed) == 1 and intents(db_path) == [name]
    assert (source / name.decode()).exists()

    wiper = LoggingWiper(source)
    second = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s2"), source, wiper=wiper)
    # Still on the recorder, so not deleted before: it is wiped now, by a confirmed delete.
    assert wiper.deleted == [name] and second.wiped == [name]
    assert intents(db_path) == []
    wiped = rows(db_path, "SELECT data FROM ledger WHERE kind = 'wiped'")
    assert len(wiped) == 1
    assert "listing after its delete" in json.loads(wiped[0]["data"])["confirmed_by"]
    check_store_invariants(db_path, store)


async def test_wipe_needs_a_verified_copy_whatever_the_verify_mode(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    make_footage(source, [MiB, 10])
    wiper = LoggingWiper(source)
    await make_offloader(wipe_after_offload=True, verify="off").offload(
        ctx(first=False), source, wiper=wiper)
    per_file: dict[int, list[str]] = {}
    for r in rows(db_path, "SELECT kind, data FROM ledger ORDER BY seq"):
        per_file.setdefault(json.loads(r["data"])["file_id"], []).append(r["kind"])
    # Files overlap (one verifies while the next copies); each one's own order is fixed.
    assert list(per_file.values()) == [["offloaded", "verified", "wiped"]] * 2


async def test_damaged_stored_copy_blocks_the_wipe_of_an_earlier_docking(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    (name,) = make_footage(source, [MiB])
    await make_offloader(verify="off").offload(ctx(), source)  # stored, not verified
    (row,) = rows(db_path, "SELECT stored_relpath FROM evidence_files")
    path = store / row["stored_relpath"]
    os.chmod(path, 0o644)
    with open(path, "r+b") as fh:  # the dock's copy rots before the next docking
        fh.seek(1000)
        fh.write(b"\xff")
    wiper = LoggingWiper(source)
    s = await make_offloader(wipe_after_offload=True).offload(
        ctx(first=False, session="s2"), source, wiper=wiper)
    assert wiper.deleted == [] and s.wiped == []
    assert (source / name.decode()).exists()  # the recorder keeps the only good copy
    state = rows(db_path, "SELECT verify_state FROM evidence_files")[0]["verify_state"]
    assert state == "failed"


async def test_undecided_delete_outside_the_walked_dirs_stays_undecided(
    make_offloader: Callable[..., Offloader], source: Path, db_path: Path
) -> None:
    (name,) = make_footage(source, [MiB])
    await make_offloader(wipe_after_offload=True).offload(ctx(), source, wiper=LosesRequest())
    assert intents(db_path) == [name]
    # The operator now offloads another directory: the file is not looked at, so its
    # undecided delete can be neither confirmed nor dismissed - and is not recorded as wiped.
    await make_offloader(footage_dirs=["OTHER"]).offload(ctx(first=False, session="s2"), source)
    assert intents(db_path) == [name]
    assert rows(db_path, "SELECT count(*) AS n FROM ledger WHERE kind = 'wiped'")[0]["n"] == 0
