"""Custody truth at offload: recorders that change, lie, hide or exaggerate.

Each test docks virtual recorders (hw_sim, on real ptys) in a real supervisor with the
real offloader, evidence store and SQLite ledger; where the recorder's filesystem must
misbehave it is served through hw_sim's fault-injecting FUSE view.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from blake3 import blake3

from agent.offload import pending
from agent.session.state_machine import State
from agent.store import evidence
from hw_sim.footage import FOOTAGE_DIR
from hw_sim.spec import Faults, FootageSpec, RecorderSpec
from hw_sim.storage import RecorderStorage

from .session_bench import Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)
UNIT_TZ = ZoneInfo("Asia/Shanghai")  # the bench's unit time zone


def _fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


needs_fuse = pytest.mark.skipif(not _fuse_available() or os.geteuid() != 0,
                                reason="needs root and FUSE (/dev/fuse)")


def rows(env: Env) -> list[evidence.StoredFile]:
    return env.query(evidence.query)  # type: ignore[no-any-return]


def prepare(bench: Bench, rec_spec: RecorderSpec) -> Path:
    """Create the recorder's storage now (as its first plug would) and return its tree, so
    a test can add entries before the recorder is docked."""
    storage = RecorderStorage(rec_spec, bench.workdir / rec_spec.serial)
    storage.materialise()
    return storage.backing


async def dock(bench: Bench, bay: str, rec_spec: RecorderSpec) -> Any:
    await bench.plug(bay, rec_spec)
    s = bench.session(rec_spec.serial)
    await wait_state(s, *ENDED)
    return s


def fault_files(env: Env, code: str) -> list[str]:
    out: list[str] = []
    for f in env.faults(code=code):
        out += [x["name"] for x in f.detail.get("files", [])]
    return out


# --- 3: a same-size content change ------------------------------------------------------

async def test_same_size_content_change_is_stored_as_new_version_and_never_wiped(
        env: Env, make_bench: Any) -> None:
    first = await make_bench()
    rec_spec = spec("SN000050")
    s1 = await dock(first, "B1", rec_spec)
    assert s1.state is State.RELEASED and len(rows(env)) == 2
    await first.unplug("B1")

    # same name, same size, same mtime, same listed times: only the bytes differ
    name = os.fsdecode(FOOTAGE_DIR) + "/" + sorted(
        p.name for p in (first.workdir / "SN000050" / "backing" / "DCIM/100BWC").iterdir())[0]
    path = first.workdir / "SN000050" / "backing" / name
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100:108] = b"TAMPERED"
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    old = env.offloader
    env.configure_offload(wipe_after_offload=True)
    second: Bench = await make_bench()
    second.workdir = first.workdir  # the same recorder comes back
    try:
        s2 = await dock(second, "B1", rec_spec)
        assert s2.state is State.RELEASED, s2.faults
    finally:
        await old.close()
    files = rows(env)
    assert len(files) == 3  # the changed content is a new version; the first one stays
    new = [f for f in files if f.source_name == name.encode() and f.session_id == s2.session_id]
    assert len(new) == 1 and new[0].blake3_hex == blake3(bytes(data)).hexdigest()
    assert (env.store / new[0].stored_relpath).read_bytes() == bytes(data)
    assert new[0].source_changed is not None and not new[0].wiped
    changed = env.faults(code="file_changed")
    assert changed and name in changed[0].reason
    assert path.exists() and path.read_bytes() == bytes(data)  # never wiped on a name match
    # the unchanged file, matched by its content, was wiped
    assert len([f for f in files if f.wiped]) == 1


# --- 4: a lying delete --------------------------------------------------------------------

async def test_a_lying_delete_is_a_wipe_failed_fault_not_a_wiped_entry(
        env: Env, make_bench: Any) -> None:
    env.configure_offload(wipe_after_offload=True)
    bench: Bench = await make_bench()
    rec_spec = spec("SN000051", faults=Faults(lying_delete=True))
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    assert env.entries(kind="wiped") == []
    assert all(not f.wiped for f in rows(env)) and len(rows(env)) == 2
    (fault,) = env.faults(code="wipe_failed")
    assert len(fault.detail["files"]) == 2
    assert all("deleted" in x["reason"] for x in fault.detail["files"])
    assert all(x.get("firmware_claim") == "deleted" for x in fault.detail["files"])
    assert env.query(lambda c: pending.wipe_intents(c, "SN000051")) == []
    assert s.offload_result.wiped == 0 and s.offload_result.wipe_failed == 2
    rec = bench.recorders["B1"]
    assert len(list(rec.storage.root.rglob("*.MP4"))) == 2
    # the next docking does not store them again and again records no wipe
    await bench.unplug("B1")
    s2 = await dock(bench, "B1", rec_spec)
    assert s2.offload_result.already_stored == 2 and s2.offload_result.stored == 0
    assert env.entries(kind="wiped") == [] and len(rows(env)) == 2


# --- 6: one unlistable entry --------------------------------------------------------------

@needs_fuse
async def test_unlistable_directory_and_unreadable_entry_do_not_stop_the_rest(
        env: Env, make_bench: Any) -> None:
    env.configure_offload(wipe_after_offload=True)
    bench: Bench = await make_bench()
    rec_spec = spec("SN000052", faults=Faults(
        unlistable_dirs=("DCIM/101BAD",), unstatable=("DCIM/100BWC/ODD.MP4",)))
    tree = prepare(bench, rec_spec)
    (tree / "DCIM/101BAD").mkdir()
    (tree / "DCIM/101BAD/HIDDEN.MP4").write_bytes(b"x" * 5000)
    (tree / "DCIM/100BWC/ODD.MP4").write_bytes(b"y" * 5000)
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    stored = sorted(f.source_display for f in rows(env))
    assert len(stored) == 2 and all(n.startswith("DCIM/100BWC/") for n in stored)
    assert "ODD" not in "".join(stored)
    named = fault_files(env, "read_error")
    assert "DCIM/101BAD" in named and "DCIM/100BWC/ODD.MP4" in named
    # the stored footage was wiped; what could not be read is still there
    assert (tree / "DCIM/101BAD/HIDDEN.MP4").exists() and (tree / "DCIM/100BWC/ODD.MP4").exists()
    assert len([f for f in rows(env) if f.wiped]) == 2


async def test_a_path_longer_than_path_max_is_stored_with_the_rest(
        env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench()
    rec_spec = spec("SN000053")
    tree = prepare(bench, rec_spec)
    fd = os.open(tree / "DCIM", os.O_RDONLY | os.O_DIRECTORY)
    rel = "DCIM"
    try:
        for i in range(16):
            part = f"{i:02d}" + "d" * 248
            os.mkdir(part, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rel += "/" + part
        wfd = os.open("DEEP.MP4", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"deep footage" * 100)
        os.close(wfd)
    finally:
        os.close(fd)
    assert len(os.fsencode(tree)) + len(rel) + 10 > os.pathconf("/", "PC_PATH_MAX")
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    names = sorted(f.source_display for f in rows(env))
    assert len(names) == 3 and f"{rel}/DEEP.MP4" in names


# --- 7: every refused entry is recorded ---------------------------------------------------

async def test_every_refused_entry_is_recorded(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench()
    rec_spec = spec("SN000054")
    tree = prepare(bench, rec_spec)
    refused = [f"DCIM/100BWC/P{i:03d}.MP4" for i in range(130)]
    for n in refused:
        os.mkfifo(tree / n)
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    assert len(rows(env)) == 2
    (fault,) = env.faults(code="hostile_content")
    assert fault.detail["count"] == 130 and len(fault.detail["files"]) <= 50
    seqs = fault.detail["complete_list"]["ledger_seqs"]
    listed: list[str] = []
    for e in env.entries(kind="entry_list"):
        assert e.seq in seqs and e.data["code"] == "hostile_content"
        listed += [x["name"] for x in e.data["entries"]]
    assert sorted(listed) == refused


# --- 8: recorder-supplied times out of range ----------------------------------------------

async def test_out_of_range_recorder_times_are_facts_with_a_fault_and_files_are_stored(
        env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench()
    year_10000_ms = 253_402_300_800_000
    rec_spec = spec("SN000055", footage=FootageSpec(count=3, size_bytes=32 * 1024),
                    faults=Faults(listed_times=((0, 2**63 - 1, 2**63 - 1),
                                                (1, year_10000_ms, year_10000_ms + 1000))))
    before = dt.datetime.now(UNIT_TZ).date()
    s = await dock(bench, "B1", rec_spec)
    after = dt.datetime.now(UNIT_TZ).date()
    assert s.state is State.RELEASED, s.faults
    files = rows(env)
    assert len(files) == 3
    odd = [f for f in files if f.rec_day > after + dt.timedelta(days=1)
           or f.rec_day < dt.date(2000, 1, 1)]
    assert odd == []
    fallback = [f for f in files if f.rec_start_us is None]
    assert len(fallback) == 2 and all(before <= f.rec_day <= after for f in fallback)
    (fault,) = env.faults(code="recording_time_invalid")
    assert "2 " in fault.reason or len(fault.detail.get("files", [])) >= 1
    raw = [e.data.get("rejected_times") for e in env.entries(kind="offloaded")]
    claims = [r for r in raw if r]
    assert len(claims) == 2
    text = repr(claims)
    assert str(2**63 - 1) in text and str(year_10000_ms) in text


async def test_an_absurd_recorder_clock_does_not_stop_the_offload(
        env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench()
    rec_spec = spec("SN000056", clock_offset_s=2.0**62 / 1000)
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    assert len(rows(env)) == 2
    # the drift is a raw fact in the ledger, as decimal text; the clock was then set
    (entry,) = env.entries(kind="clock_set", session_id=s.session_id)
    assert int(entry.data["drift_before_ms"]) > 2**61 and entry.data["set_ok"] is True
    assert isinstance(entry.data["drift_after_ms"], int)


# --- 9: one impossible file ---------------------------------------------------------------

async def test_a_sparse_file_claiming_a_tebibyte_is_refused_alone(
        env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench()
    rec_spec = spec("SN000057")
    tree = prepare(bench, rec_spec)
    with open(tree / "DCIM/100BWC/HUGE.MP4", "wb") as fh:
        fh.truncate(1 << 40)
    s = await dock(bench, "B1", rec_spec)
    assert s.state is State.RELEASED, s.faults
    assert env.faults(code="dock_storage_full") == []
    assert len(rows(env)) == 2
    assert "DCIM/100BWC/HUGE.MP4" in fault_files(env, "hostile_content")
