"""The HIL recorder images, checked on the host (no qemu): what the guest's USB disk will
hold must be exactly the generator's footage, in either layout."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from hil_specs import recorder_spec

from hw_sim.footage import expected_files
from hw_sim.storage import RecorderStorage

from . import hil_session  # noqa: F401  (puts the guest helpers on sys.path)
from .hil_fat import PART_START, SECTOR, build_fat_image, image_files

pytestmark = pytest.mark.skipif(
    not (shutil.which("mkfs.vfat") and shutil.which("mcopy")), reason="needs dosfstools, mtools"
)


def _footage(tmp_path: Path, sizes: list[int]) -> tuple[Path, list[tuple[str, int, str]]]:
    spec = recorder_spec("BWC00077", sizes)
    storage = RecorderStorage(spec, tmp_path / "rec")
    storage.materialise()
    want = sorted((f.name.decode(), f.size, f.blake3.hex()) for f in expected_files(spec))
    return storage.backing, want


@pytest.mark.parametrize("partitioned", [True, False])
def test_image_holds_the_footage_bit_for_bit(tmp_path: Path, partitioned: bool) -> None:
    tree, want = _footage(tmp_path, [300_000, 1 << 20, 0])
    image = tmp_path / "rec.img"
    build_fat_image(image, tree, size_mib=40, partitioned=partitioned)
    got = [(f.name, f.size, f.blake3) for f in image_files(image, partitioned=partitioned)]
    assert got == want
    assert image.stat().st_size == 40 << 20


def test_partitioned_layout_is_one_fat32_partition_at_1mib(tmp_path: Path) -> None:
    tree, _ = _footage(tmp_path, [1000])
    image = tmp_path / "rec.img"
    build_fat_image(image, tree, size_mib=40, partitioned=True)
    data = image.read_bytes()
    assert data[510:512] == b"\x55\xaa"
    ptype = data[446 + 4]
    start, count = struct.unpack_from("<II", data, 446 + 8)
    assert (ptype, start, start + count) == (0x0C, PART_START, (40 << 20) // SECTOR)
    assert data[446 + 16 : 510] == bytes(48)  # no other partitions
    boot = data[PART_START * SECTOR : PART_START * SECTOR + SECTOR]
    assert boot[82:90] == b"FAT32   " and boot[510:512] == b"\x55\xaa"


def test_whole_disk_layout_has_no_partition_table(tmp_path: Path) -> None:
    tree, _ = _footage(tmp_path, [1000])
    image = tmp_path / "rec.img"
    build_fat_image(image, tree, size_mib=40, partitioned=False)
    boot = image.read_bytes()[:SECTOR]
    assert boot[82:90] == b"FAT32   "  # the filesystem starts at sector 0


def test_mtools_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="mdir"):
        image_files(tmp_path / "missing.img", partitioned=False)
