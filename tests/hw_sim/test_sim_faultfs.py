"""File-layer faults through the FUSE view: EIO at an offset, unplug at byte N, growing file."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from blake3 import blake3
from sim_helpers import OpenClient, StartRecorder, needs_fuse, small_spec

from firmware_bridge.errors import LinkClosed
from firmware_bridge.messages import LogKind
from hw_sim import fusemount
from hw_sim.footage import content, expected_files, footage_files
from hw_sim.recorder import VirtualRecorder
from hw_sim.spec import Faults

pytestmark = needs_fuse


def read_all(path: Path, chunk: int = 65536) -> tuple[bytes, int | None]:
    """Plain reads until EOF or an error: (bytes read, errno or None)."""
    out = bytearray()
    with open(path, "rb", buffering=0) as fh:
        try:
            while block := fh.read(chunk):
                out += block
        except OSError as e:
            return bytes(out), e.errno
    return bytes(out), None


async def unlocked(rec: VirtualRecorder, open_client: OpenClient) -> Path:
    c = await open_client(rec.tty_path)
    await c.set_mass_storage(True)
    await until(lambda: rec.storage_path is not None, "storage never appeared")
    assert rec.storage_path is not None
    return rec.storage_path


async def until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for an event, with a deadline generous enough for a loaded machine."""
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(what) from None


async def test_eio_at_offset(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    spec = small_spec(faults=Faults(eio_at=((0, 100_000),)))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    assert os.path.ismount(media)
    f0 = footage_files(spec)[0]
    path = media / f0.path_str
    data, err = await asyncio.to_thread(read_all, path)
    assert err == errno.EIO and data == content(f0, 0, 100_000)
    data, err = await asyncio.to_thread(read_all, path)  # the fault is permanent
    assert err == errno.EIO and len(data) == 100_000
    await until(  # the recorder logs its storage faults
        lambda: [e.kind for e in rec.state.event_log].count(LogKind.STORAGE_FAULT) >= 2,
        "storage faults logged")

    def read_after() -> bytes:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(150_000)
            return fh.read(1000)

    assert await asyncio.to_thread(read_after) == content(f0, 150_000, 1000)
    f1 = footage_files(spec)[1]  # other files are unaffected
    data, err = await asyncio.to_thread(read_all, media / f1.path_str)
    assert err is None and blake3(data).digest() == expected_files(spec)[1].blake3


async def test_transient_eio(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    spec = small_spec(faults=Faults(eio_at=((1, 70_000),), eio_count=1))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    f1 = footage_files(spec)[1]
    _, err = await asyncio.to_thread(read_all, media / f1.path_str)
    assert err == errno.EIO
    data, err = await asyncio.to_thread(read_all, media / f1.path_str)  # a retry succeeds
    assert err is None and blake3(data).digest() == expected_files(spec)[1].blake3


async def test_unplug_at_byte_then_replug_presents_same_files(
    tmp_path: Path, start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(faults=Faults(unplug_at=(1, 150_000)))
    unplugs: list[bool] = []
    rec = await start_recorder(spec, on_unplug=lambda: unplugs.append(True))
    c = await open_client(rec.tty_path)
    await c.set_mass_storage(True)
    await until(lambda: rec.storage_path is not None, "storage never appeared")
    media = rec.storage_path
    assert media is not None
    f1 = footage_files(spec)[1]
    data, err = await asyncio.to_thread(read_all, media / f1.path_str)
    assert data == content(f1, 0, 150_000) and err is not None
    await until(lambda: bool(unplugs), "the recorder never unplugged")
    assert unplugs == [True]
    await rec.stop()  # what the dock does on the notice
    assert not os.path.ismount(media)
    with pytest.raises(LinkClosed):
        await c.identity()

    again = await start_recorder(spec)  # replug: same files, the fault does not fire again
    media2 = await unlocked(again, open_client)
    for e in expected_files(spec):
        data, err = await asyncio.to_thread(read_all, media2 / e.name.decode())
        assert err is None and blake3(data).digest() == e.blake3


async def test_self_unplug_without_callback(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(faults=Faults(unplug_at=(0, 0)))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    f0 = footage_files(spec)[0]
    data, err = await asyncio.to_thread(read_all, media / f0.path_str)
    assert data == b"" and err is not None
    await asyncio.wait_for(rec.unplugged.wait(), 60)
    assert rec.storage_path is None and not os.path.ismount(media)


async def test_growing_file(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    spec = small_spec(faults=Faults(growing=(2,), grow_step_bytes=16384))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    f2 = footage_files(spec)[2]
    path = media / f2.path_str
    size0 = path.stat().st_size
    assert size0 == f2.size // 2
    data, err = await asyncio.to_thread(read_all, path, 8192)
    assert err is None and len(data) > size0
    assert data == content(f2, 0, len(data))  # a growing prefix of the real recording
    assert path.stat().st_size > size0
    assert rec.firmware.storage().recording  # the recorder reports a recording in progress


async def test_stop_unmounts_even_with_open_files(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(faults=Faults(eio_at=((0, 10),)))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    fh = open(media / footage_files(spec)[1].path_str, "rb")  # keeps the mount busy
    try:
        await rec.stop()
        assert not os.path.ismount(media)
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the device is gone
            fh.close()


async def test_quick_toggles_end_consistent(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    seen: list[Path | None] = []
    spec = small_spec(faults=Faults(eio_at=((0, 10),)))
    rec = await start_recorder(spec, on_storage=seen.append)
    c = await open_client(rec.tty_path)
    for on in (True, False, True, False, True):
        await c.set_mass_storage(on)
    await until(lambda: rec.storage_path is not None and rec.exposure.settled,
                "the toggles never settled")
    assert os.path.ismount(rec.storage_dir) and seen[-1] == rec.storage_dir
    assert all(a != b for a, b in itertools.pairwise(seen))  # strictly alternating
    await c.set_mass_storage(False)
    await c.set_mass_storage(True)
    await rec.stop()  # with a switch possibly still queued
    await until(lambda: bool(seen) and seen[-1] is None, "storage never reported gone")
    assert not os.path.ismount(rec.storage_dir)


KILLED_PARENT = """
import asyncio, os, sys
from pathlib import Path
from hw_sim.fusemount import FaultMount

async def main() -> None:
    m = FaultMount(Path(sys.argv[1]), Path(sys.argv[2]), eio=[(b"x", 1)])
    await m.start()
    print("mounted", flush=True)
    os.kill(os.getpid(), 9)

asyncio.run(main())
"""


async def test_mount_goes_away_when_the_simulator_is_killed(tmp_path: Path) -> None:
    from hw_sim.fusemount import is_mounted

    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    (backing / "x").write_bytes(b"hello")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_PARENT, str(backing), str(mnt),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert out == b"mounted\n" and proc.returncode == -9
    try:
        await until(lambda: not is_mounted(mnt), "the mount outlived its simulator")
    finally:
        fusemount.unmount_sync(mnt)


async def test_hostile_names_through_fuse(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    from hw_sim.storage import hostile_entries

    spec = small_spec(faults=Faults(hostile_names=True, eio_at=((0, 10),)))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    assert os.path.ismount(media)
    base = os.fsencode(media)
    for e in hostile_entries():
        os.lstat(os.path.join(base, e.name))  # every entry is reachable by its exact bytes
    bad = next(e.name for e in hostile_entries() if e.kind == "bad_utf8")
    assert os.path.basename(bad) in os.listdir(os.path.join(base, b"DCIM/100BWC"))
    link = next(e.name for e in hostile_entries() if e.name.endswith(b"link_out.MP4"))
    assert os.readlink(os.path.join(base, link)) == b"/etc/passwd"
