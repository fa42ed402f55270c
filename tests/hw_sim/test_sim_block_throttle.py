"""A recorder's read rate held by the kernel: its storage is an ext4 image on a loop device
whose reads the block layer throttles (`hw_sim.blockvolume`). Real loop devices, mounts and
the cgroup blkio throttle; skipped where they are missing (not root, no loop devices).
Time is never asserted: the tests read the limit the kernel holds, not how fast bytes came.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from blake3 import blake3

from hw_sim import blockvolume
from hw_sim.blockvolume import (
    BlockVolume,
    BlockVolumeError,
    kernel_throttle_unavailable,
    loop_devices_of,
    rate_by_kernel,
    read_limit,
)
from hw_sim.footage import content, footage_files
from hw_sim.recorder import VirtualRecorder
from hw_sim.spec import Faults
from hw_sim.storage import RecorderStorage

from .sim_helpers import OpenClient, StartRecorder, small_spec
from .test_sim_faultfs import read_all, unlocked

needs_block = pytest.mark.skipif(
    kernel_throttle_unavailable() is not None,
    reason=f"kernel read throttle unavailable: {kernel_throttle_unavailable()}",
)


def _device_of(rec: VirtualRecorder, path: Path) -> str:
    """The recorder's loop device, checked to be the one whose filesystem holds `path`."""
    volume = rec.storage.volume
    assert volume is not None and volume.device is not None
    assert Path(volume.device).stat().st_rdev == path.stat().st_dev
    return volume.device


def test_only_a_rate_asked_of_the_kernel_insists_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockvolume, "kernel_throttle_unavailable", lambda: "no loop devices")
    assert rate_by_kernel(35.0, "auto") is False  # falls back to the FUSE view
    assert rate_by_kernel(35.0, "fuse") is False
    assert rate_by_kernel(None, "kernel") is False  # no rate, nothing to hold
    with pytest.raises(BlockVolumeError, match="no loop devices"):
        rate_by_kernel(35.0, "kernel")
    monkeypatch.setattr(blockvolume, "kernel_throttle_unavailable", lambda: None)
    assert rate_by_kernel(35.0, "auto") is True
    assert rate_by_kernel(35.0, "fuse") is False


def test_an_unknown_holder_of_the_rate_is_a_spec_error() -> None:
    from hw_sim.errors import SpecError

    with pytest.raises(SpecError, match="read_rate_by"):
        Faults(read_rate_mb_s=35.0, read_rate_by="usb")  # type: ignore[arg-type]
    assert not Faults(read_rate_mb_s=35.0, read_rate_by="kernel").needs_fuse
    assert Faults(read_rate_mb_s=35.0, read_rate_by="fuse").needs_fuse


@needs_block
async def test_a_kernel_throttled_recorder_serves_every_byte_from_its_own_device(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(faults=Faults(read_rate_mb_s=50.0, read_rate_by="kernel"))
    rec = await start_recorder(spec)
    media = await unlocked(rec, open_client)
    device = _device_of(rec, media)
    assert device.startswith("/dev/loop")
    assert await asyncio.to_thread(read_limit, device) == 50_000_000
    for f in footage_files(spec):
        data, err = await asyncio.to_thread(read_all, media / f.path_str)
        assert err is None and data == content(f, 0, f.size)
    assert sorted(os.listdir(media)) == ["DCIM"]  # no lost+found a recorder never has
    with pytest.raises(OSError):  # the host's view is read-only, like a locked-down LUN
        (media / "DCIM" / "new.MP4").write_bytes(b"x")

    # a rate changed while plugged is held at once
    rec.set_faults(dataclasses.replace(spec.faults, read_rate_mb_s=20.0))
    assert await asyncio.to_thread(read_limit, device) == 20_000_000

    image = rec.dir / blockvolume.IMAGE_NAME
    await rec.stop()
    assert not os.path.ismount(media) and not os.path.ismount(rec.dir / "backing")
    assert await asyncio.to_thread(loop_devices_of, image) == []
    assert not blockvolume._live


@needs_block
def test_a_wipe_stays_wiped_across_replugs_and_leftovers_of_a_killed_simulator_go(
    tmp_path: Path,
) -> None:
    spec = small_spec()
    files = footage_files(spec)
    storage = RecorderStorage(spec, tmp_path / spec.serial)
    storage.use_volume(BlockVolume(storage.dir, 35_000_000))
    storage.materialise()
    victim = files[0]
    digest = blake3(content(victim, 0, victim.size)).digest()
    storage.delete(victim.name, victim.size, digest)
    storage.release()

    # Replug: the image is found again (same spec), with the wipe in it.
    again = RecorderStorage(spec, tmp_path / spec.serial)
    again.use_volume(BlockVolume(again.dir, 35_000_000))
    again.materialise()
    assert [e.name for e in again.list_entries()] == [f.name for f in files[1:]]
    assert again.volume is not None
    again.volume.expose()
    # The simulator is killed here: its mounts, loop device and throttle stay behind.
    blockvolume._live.clear()

    third = RecorderStorage(spec, tmp_path / spec.serial)
    third.use_volume(BlockVolume(third.dir, 35_000_000))
    third.materialise()
    image = third.dir / blockvolume.IMAGE_NAME
    assert len(loop_devices_of(image)) == 1  # the leftover device was detached
    assert [e.name for e in third.list_entries()] == [f.name for f in files[1:]]
    third.release()
    assert loop_devices_of(image) == []
    assert not os.path.ismount(third.media) and not os.path.ismount(third.backing)


@needs_block
def test_switching_between_image_and_directory_regenerates_the_footage(tmp_path: Path) -> None:
    spec = small_spec()
    names = [f.name for f in footage_files(spec)]
    in_image = RecorderStorage(spec, tmp_path / spec.serial)
    in_image.use_volume(BlockVolume(in_image.dir, 35_000_000))
    in_image.materialise()
    in_image.release()

    plain = RecorderStorage(spec, tmp_path / spec.serial)
    plain.materialise()  # the image's footage is not a plain directory's
    assert [e.name for e in plain.list_entries()] == names
    assert not (plain.dir / blockvolume.IMAGE_NAME).exists()

    back = RecorderStorage(spec, tmp_path / spec.serial)
    back.use_volume(BlockVolume(back.dir, 35_000_000))
    back.materialise()
    assert [e.name for e in back.list_entries()] == names
    back.release()
