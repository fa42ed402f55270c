"""Mount point naming, mountinfo parsing, mount options and the directory mounter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.devices.events import BlockStorage, DirectoryStorage
from agent.mount.errors import MountError, MountRefused
from agent.mount.helper import mount_data
from agent.mount.mounter import DirectoryMounter, HelperMounter, make_mounter
from agent.mount.mountinfo import mounted_at, mounts_of_device, parse_mountinfo
from agent.mount.naming import is_safe_name, mount_name
from agent.settings import MountSettings


@given(st.text(min_size=1, max_size=300))
def test_mount_names_are_always_one_safe_component(key: str) -> None:
    name = mount_name(key)
    assert is_safe_name(name)
    assert "/" not in name and name not in (".", "..") and not name.startswith(".")


def test_mount_names_are_readable_and_distinct() -> None:
    assert mount_name("BWC10234").startswith("BWC10234-")
    assert mount_name("../../etc").startswith("etc-")
    assert mount_name("a/b") != mount_name("a_b")  # filtered alike, told apart by the hash
    assert mount_name("BWC10234") == mount_name("BWC10234")


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", ".x", "-x", "a b", "ä", "x" * 101, 7])
def test_unsafe_names(name: object) -> None:
    assert not is_safe_name(name)


MOUNTINFO = (
    "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    "97 27 7:3 / /run/dock-agent/media/BWC10234-1a2b ro,nosuid,nodev,noexec,noatime "
    "shared:50 - vfat /dev/loop3 ro,fmask=0337,dmask=0227\n"
    "98 27 8:1 / /mnt/with\\040space rw,relatime - ext4 /dev/sda1 rw\n"
)


def test_parse_mountinfo() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    entry = mounted_at(entries, "/run/dock-agent/media/BWC10234-1a2b")
    assert entry is not None
    assert entry.device == (7, 3) and entry.fs_type == "vfat" and entry.source == "/dev/loop3"
    assert {"ro", "nosuid", "nodev", "noexec"} <= entry.options
    assert mounted_at(entries, "/mnt/with space") is not None
    assert [e.mount_point for e in mounts_of_device(entries, os.makedev(8, 1))] == [
        "/mnt/with space"
    ]


def test_mount_data_per_filesystem() -> None:
    assert mount_data("vfat", 998, 997) == "uid=998,gid=997,fmask=0337,dmask=0227,utf8"
    assert "iocharset=utf8" in mount_data("exfat", 1, 1)
    assert mount_data("ext4", 1, 1) == "noload"
    with pytest.raises(MountRefused):
        mount_data("ntfs", 1, 1)


async def test_directory_mounter(tmp_path: Path) -> None:
    mounter = DirectoryMounter()
    assert await mounter.mount("SIM1", DirectoryStorage(str(tmp_path))) == tmp_path
    await mounter.unmount("SIM1", lazy=True)
    assert tmp_path.is_dir()  # nothing removed
    with pytest.raises(MountRefused, match="not a directory"):
        await mounter.mount("SIM1", DirectoryStorage(str(tmp_path / "missing")))
    with pytest.raises(MountError, match="needs the mount helper"):
        await mounter.mount("SIM1", BlockStorage("/dev/sda1", "vfat", False))


async def test_helper_mounter_refuses_directories(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="method = \"directory\""):
        await HelperMounter(tmp_path / "s").mount("SIM1", DirectoryStorage(str(tmp_path)))


def test_make_mounter() -> None:
    assert isinstance(make_mounter(MountSettings(method="directory")), DirectoryMounter)
    helper = make_mounter(MountSettings(helper_socket=Path("/run/x.sock")))
    assert isinstance(helper, HelperMounter) and helper.socket_path == Path("/run/x.sock")

