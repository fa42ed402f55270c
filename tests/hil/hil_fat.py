"""Recorder storage images for the HIL guest, built on the host without mounting anything.

A FAT32 filesystem made with mkfs.vfat and filled with mtools, either inside an MBR
partition (like most recorders) or on the whole disk without a partition table. Footage is
the hw_sim generator's, materialised once in the recorder's work directory; the expected
BLAKE3 of each file is read back out of the finished image with mtools, so a test compares
the agent's stored hashes with what is really on the medium.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

SECTOR = 512
PART_START = 2048  # sectors: the first partition at 1 MiB, as partitioning tools do
_MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": ""}


@dataclass(frozen=True)
class ImageFile:
    name: str  # path inside the filesystem, "/"-separated, e.g. DCIM/100BWC/X.MP4
    size: int
    blake3: str  # hex


def _run(*argv: str) -> bytes:
    out = subprocess.run(argv, capture_output=True, env=_MTOOLS_ENV, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {out.stderr.decode(errors='replace')}")
    return out.stdout


def _target(image: Path, partitioned: bool) -> str:
    return f"{image}@@{PART_START * SECTOR}" if partitioned else str(image)


def _write_mbr(image: Path, sectors: int) -> None:
    """One primary partition of type 0x0C (FAT32, LBA) from PART_START: a classic DOS label."""
    chs_max = b"\xfe\xff\xff"  # "use LBA"
    entry = (b"\x00" + chs_max + b"\x0c" + chs_max
             + PART_START.to_bytes(4, "little") + sectors.to_bytes(4, "little"))
    with image.open("r+b") as fh:
        fh.seek(446)
        fh.write(entry + bytes(48) + b"\x55\xaa")


def build_fat_image(image: Path, tree: Path, *, size_mib: int, partitioned: bool) -> None:
    """Make `image` (size_mib MiB) holding every file under `tree`, same relative paths."""
    total = size_mib << 20
    with image.open("wb") as fh:
        fh.truncate(total)
    if partitioned:
        _write_mbr(image, total // SECTOR - PART_START)
        fs_kib = (total - PART_START * SECTOR) // 1024
        _run("mkfs.vfat", "-F", "32", "-n", "RECORDER", f"--offset={PART_START}",
             str(image), str(fs_kib))
    else:
        _run("mkfs.vfat", "-F", "32", "-I", "-n", "RECORDER", str(image))
    target = _target(image, partitioned)
    for d in sorted(p for p in tree.rglob("*") if p.is_dir()):
        _run("mmd", "-i", target, "::/" + d.relative_to(tree).as_posix())
    for f in sorted(p for p in tree.rglob("*") if p.is_file()):
        _run("mcopy", "-i", target, str(f), "::/" + f.relative_to(tree).as_posix())


def image_files(image: Path, *, partitioned: bool) -> list[ImageFile]:
    """Every regular file in the image with its size and BLAKE3, read back with mtools."""
    target = _target(image, partitioned)
    listing = _run("mdir", "-i", target, "-/", "-b", "::/").decode().splitlines()
    out = []
    for line in listing:
        path = line.strip()
        if not path or path.endswith("/"):
            continue
        name = path.removeprefix("::/")
        data = _run("mtype", "-i", target, "::/" + name)
        out.append(ImageFile(name, len(data), blake3(data).hexdigest()))
    return sorted(out, key=lambda f: f.name)


def delete_files(image: Path, names: list[str], *, partitioned: bool) -> None:
    """Remove `names` (paths inside the filesystem) from the image, as the recorder's own
    firmware removes a recording from its flash."""
    target = _target(image, partitioned)
    for name in names:
        _run("mdel", "-i", target, "::/" + name)
