"""Officer attribution and assignment at docking.

Footage belongs to the officer who held the recorder while it was recorded: the officer
record read at docking (or the officer number the recorder stamped into a file's name).
An assignment requested while the recorder was away is written only after this docking's
footage is stored, read back, and recorded in the custody ledger with both officers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.devices.events import DirectoryStorage, StorageAppeared
from agent.session.state_machine import State
from agent.settings import DeviceSettings
from agent.store import assignments
from firmware_bridge.messages import OfficerRecord
from hw_sim.fusemount import fuse_available
from hw_sim.spec import Faults, FootageSpec

from .session_bench import OFFICER, SMALL, Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)
needs_fuse = pytest.mark.skipif(not fuse_available(), reason="needs FUSE (/dev/fuse, fuse3)")


def _evidence(env: Env) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = env.query(lambda c: c.execute(
        "SELECT officer_no, officer_name, stored_relpath FROM evidence_files ORDER BY id"
    ).fetchall())
    return rows


def _assign_b(env: Env, serial: str) -> None:
    env.db.write_sync(lambda c: assignments.request(
        c, serial, officer_no="0099", officer_name="王芳", unit_no="U-17",
        unit_name="卫生监督所", requested_by="central"))


async def test_footage_is_filed_under_the_officer_who_held_the_recorder(
        env: Env, bench: Bench) -> None:
    # Officer A (0042) holds the recorder; central assigns B (0099) while it is away.
    _assign_b(env, "SN000077")
    rec = await bench.plug("B1", spec("SN000077"))
    s = bench.session("SN000077")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults

    # The files are A's: index, store layout and custody entries.
    rows = _evidence(env)
    assert len(rows) == 2
    assert all(r[0] == "0042" and r[1] == "Li Wei" and "/0042/" in r[2] for r in rows), rows
    offloaded = env.entries(session_id=s.session_id, kind="offloaded")
    assert [e.officer for e in offloaded] == ["0042", "0042"]

    # Then, and only then, B was written to the recorder and both facts ledgered.
    (assigned,) = env.entries(session_id=s.session_id, kind="officer_assigned")
    assert assigned.seq > max(e.seq for e in offloaded)
    assert assigned.officer == "0099"
    assert assigned.data["before"]["officer_no"] == "0042"
    assert assigned.data["after"] == {"officer_no": "0099", "officer_name": "王芳",
                                      "unit_no": "U-17", "unit_name": "卫生监督所"}
    assert assigned.data["offload"]["stored"] == 2
    assert rec.firmware.state.officer.officer_no == "0099"
    assert env.query(lambda c: assignments.pending(c, "SN000077")) is None
    assert bench.supervisor.snapshot()[0].officer_no == "0099"

    # The recorder itself now reports B at its next docking.
    await bench.unplug("B1")
    await bench.plug("B1", spec("SN000077"))
    s2 = bench.session("SN000077")
    await wait_state(s2, *ENDED)
    (ident,) = env.entries(session_id=s2.session_id, kind="identified")
    assert ident.officer == "0099" and ident.data["officer_name"] == "王芳"
    assert len(_evidence(env)) == 2  # nothing re-filed under B


async def test_assignment_while_docked_is_applied_now(env: Env, bench: Bench) -> None:
    rec = await bench.plug("B1", spec("SN000078"))
    s = bench.session("SN000078")
    await wait_state(s, State.RELEASED, State.FAILED)
    assert await s.apply_pending_assignment() is False  # nothing pending: nothing written
    env.db.write_sync(lambda c: assignments.request(c, "SN000078", officer_no="0100"))
    assert await s.apply_pending_assignment() is True
    assert rec.firmware.state.officer.officer_no == "0100"
    assert [e.officer for e in env.entries(kind="officer_assigned")] == ["0100"]
    assert await s.apply_pending_assignment() is False  # applied once, not again


async def test_assignment_arriving_before_the_offload_waits_for_it(
        env: Env, bench: Bench) -> None:
    bench.deliver_storage = False  # hold the docking before its footage is read
    rec = await bench.plug("B1", spec("SN000079"))
    s = bench.session("SN000079")
    await wait_state(s, State.STORAGE_UNLOCKED)
    _assign_b(env, "SN000079")
    assert await s.apply_pending_assignment() is False  # the command path: still pending
    assert rec.firmware.state.officer.officer_no == "0042"

    while rec.storage_path is None:
        await asyncio.sleep(0.01)
    await bench.supervisor.handle(StorageAppeared(
        key="SN000079", bay="B1", storage=DirectoryStorage(str(rec.storage_path))))
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults
    assert [r[0] for r in _evidence(env)] == ["0042", "0042"]
    assert rec.firmware.state.officer.officer_no == "0099"
    assert [e.officer for e in env.entries(kind="officer_assigned")] == ["0099"]


async def test_failed_offload_keeps_the_assignment_pending(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(devices=DeviceSettings(source="sim", storage_wait_s=1))
    bench.deliver_storage = False  # storage never appears: nothing is stored
    _assign_b(env, "SN000080")
    rec = await bench.plug("B1", spec("SN000080"))
    s = bench.session("SN000080")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    # A's footage is still on the recorder: it must not go out as B's.
    assert rec.firmware.state.officer.officer_no == "0042"
    assert await s.apply_pending_assignment() is False
    assert env.query(lambda c: assignments.pending(c, "SN000080")) is not None
    assert env.entries(kind="officer_assigned") == []


async def test_officer_in_the_file_name_wins_and_the_disagreement_is_recorded(
        env: Env, bench: Bench) -> None:
    # The files were recorded by 0042 (stamped in their names); the recorder's officer
    # record says 0077 when it docks.
    other = OfficerRecord(officer_no="0077", officer_name="Zhao Lei", unit_no=OFFICER.unit_no,
                          unit_name=OFFICER.unit_name)
    footage = FootageSpec(count=2, size_bytes=SMALL.size_bytes, officer_no="0042")
    await bench.plug("B1", spec("SN000081", officer=other, footage=footage))
    s = bench.session("SN000081")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults

    rows = _evidence(env)
    assert [r[0] for r in rows] == ["0042", "0042"]
    assert all("/0042/" in r[2] and r[1] == "" for r in rows), rows
    assert [e.officer for e in env.entries(kind="offloaded")] == ["0042", "0042"]
    (f,) = env.faults(code="officer_mismatch")
    assert f.severity == "warning" and f.officer == "0077"
    assert f.detail["docking_officer"] == "0077"
    assert sorted(x["officer_no"] for x in f.detail["files"]) == ["0042", "0042"]
    assert "0042" in f.reason and "0077" in f.reason


async def test_names_that_agree_with_the_record_raise_nothing(env: Env, bench: Bench) -> None:
    footage = FootageSpec(count=2, size_bytes=SMALL.size_bytes, officer_no="0042")
    await bench.plug("B1", spec("SN000082", footage=footage))
    s = bench.session("SN000082")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED and env.faults() == []
    assert [r[0] for r in _evidence(env)] == ["0042", "0042"]


@needs_fuse
async def test_files_left_on_the_recorder_are_ledgered_as_the_previous_officers(
        env: Env, make_bench: Any) -> None:
    env.configure_offload(read_retries=0)
    bench: Bench = await make_bench()
    _assign_b(env, "SN000083")
    rec = await bench.plug("B1", spec("SN000083", faults=Faults(eio_at=((1, 4096),))))
    s = bench.session("SN000083")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults
    assert [r[0] for r in _evidence(env)] == ["0042"]
    # B goes out with the recorder; the file it could not read is on record as A's.
    assert rec.firmware.state.officer.officer_no == "0099"
    (assigned,) = env.entries(kind="officer_assigned")
    assert assigned.data["before"]["officer_no"] == "0042"
    (left,) = assigned.data["left_on_recorder"]
    assert left["name"] == rec.storage.footage(1).name.decode()
    assert assigned.data["left_on_recorder_count"] == 1
    assert "left_on_recorder_list" not in assigned.data  # one name: no ledger list


def test_officer_in_name_default_pattern() -> None:
    import re

    from agent.domain import officer_in_name
    from agent.settings import RecorderSettings

    pat = re.compile(RecorderSettings().officer_in_name)
    assert officer_in_name(pat, b"DCIM/100BWC/SN000081_0042_20261127_010000_0001.MP4") == "0042"
    # the simulator's plain names, and the serial's own digits, are no officer
    assert officer_in_name(pat, b"DCIM/100BWC/SN000081_20261127_010000_0001.MP4") is None
    assert officer_in_name(pat, b"DCIM/100BWC/SN000081_12345678_20261127_010000_1.MP4") is None
    assert officer_in_name(pat, b"DCIM/X_0042_20261127_010000_1.MP4/inner.MP4") is None
    assert officer_in_name(None, b"SN000081_0042_20261127_010000_0001.MP4") is None
    # a group that captured something no officer record could hold is ignored
    odd = re.compile(r"^(?P<officer>[^_]*)_")
    assert officer_in_name(odd, "王芳_x".encode()) is None
    assert officer_in_name(odd, b"a\nb_x") is None
    assert officer_in_name(odd, b"_x") is None
