"""The helper mounting real filesystems on real loop devices (root only)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.devices.events import BlockStorage
from agent.mount.errors import MountRefused
from agent.mount.helper import MountService
from agent.mount.mounter import HelperMounter
from agent.mount.mountinfo import mounted_at, read_mountinfo
from agent.mount.naming import mount_name
from agent.mount.policy import UdevTagPolicy

from .conftest import AGENT_GID, AGENT_UID, FILES, Helper, LoopDevice, fs_params, needs_root

pytestmark = needs_root


def _storage(loop: object) -> BlockStorage:
    return BlockStorage(loop.devnode, loop.fs_type, True)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fs_type", fs_params())
async def test_mounts_read_only_with_safe_flags(
        helper: Helper, make_loop: Callable[..., LoopDevice], fs_type: str) -> None:
    loop = make_loop(fs_type)
    mounter = HelperMounter(helper.socket_path)
    path = await mounter.mount("BWC10234", _storage(loop))
    assert path == helper.mount_root / mount_name("BWC10234")
    entry = mounted_at(read_mountinfo(), str(path))
    assert entry is not None and entry.source == loop.devnode
    assert {"ro", "nosuid", "nodev", "noexec", "noatime"} <= entry.options
    if fs_type == "ext4":
        assert "norecovery" in entry.super_options  # the journal is never replayed
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data
    with pytest.raises(OSError) as write:
        (path / "DCIM" / "new.txt").write_bytes(b"x")
    assert write.value.errno == errno.EROFS
    with pytest.raises(OSError) as change:
        (path / next(iter(FILES))).open("r+b")
    assert change.value.errno == errno.EROFS
    # The block device itself refuses writes, whatever a filesystem would do.
    assert Path(f"/sys/class/block/{Path(loop.devnode).name}/ro").read_text().strip() == "1"
    root = path.parent.stat()  # the mount root: root's, entered by the agent's group only
    assert (root.st_uid, root.st_gid, root.st_mode & 0o777) == (0, AGENT_GID, 0o750)
    st = path.stat()
    if fs_type == "vfat":
        assert st.st_uid == AGENT_UID and (path / next(iter(FILES))).stat().st_mode & 0o777 == 0o440

    await mounter.unmount("BWC10234")
    assert mounted_at(read_mountinfo(), str(path)) is None
    assert not path.exists()
    await mounter.unmount("BWC10234")  # again: nothing there, still fine


@pytest.mark.parametrize("fs_type", fs_params())
async def test_lazy_unmount_with_a_file_open(
        helper: Helper, make_loop: Callable[..., LoopDevice], fs_type: str) -> None:
    loop = make_loop(fs_type)
    mounter = HelperMounter(helper.socket_path)
    path = await mounter.mount("BWC10577", _storage(loop))
    name, data = next(iter(FILES.items()))
    with (path / name).open("rb") as f:
        with pytest.raises(MountRefused) as busy:
            await mounter.unmount("BWC10577")
        assert busy.value.code == "busy"
        assert mounted_at(read_mountinfo(), str(path)) is not None
        await mounter.unmount("BWC10577", lazy=True)
        assert mounted_at(read_mountinfo(), str(path)) is None
        assert not path.exists()
        assert f.read() == data  # the open file survives the detach


async def test_unmounts_a_filesystem_whose_root_the_agent_owns(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    """FAT is mounted with uid=<agent>: while mounted, the mount point shows a root owned by
    the agent. Unmounting must still work (found by the hardware-in-the-loop suite)."""
    loop = make_loop("ext4", root_owner=AGENT_UID)
    mounter = HelperMounter(helper.socket_path)
    path = await mounter.mount("BWC10235", _storage(loop))
    assert path.stat().st_uid == AGENT_UID
    await mounter.unmount("BWC10235")
    assert mounted_at(read_mountinfo(), str(path)) is None
    assert not path.exists()


async def test_remount_of_the_same_device_is_idempotent(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    loop = make_loop("ext4")
    mounter = HelperMounter(helper.socket_path)
    first = await mounter.mount("BWC1", _storage(loop))
    assert await mounter.mount("BWC1", _storage(loop)) == first  # agent restarted
    with pytest.raises(MountRefused) as twice:
        await mounter.mount("BWC2", _storage(loop))
    assert twice.value.code == "device_busy"
    other = make_loop("ext4")  # the helper itself never mounts over a mount point
    assert _refusal(helper.service, other.devnode, mount_name("BWC1")) == "already_mounted"
    await mounter.unmount("BWC1")


def _refusal(service: MountService, devnode: str, name: str) -> str:
    with pytest.raises(MountRefused) as refused:
        service.mount(devnode, name)
    return refused.value.code


@pytest.mark.parametrize("name", ["../escape", "..", ".", "a/b", "", ".hidden", "x" * 200,
                                  "name\n", "-rf"])
def test_rejects_unsafe_names(
        helper: Helper, make_loop: Callable[..., LoopDevice], name: str) -> None:
    loop = make_loop("ext4")
    assert _refusal(helper.service, loop.devnode, name) == "bad_name"
    with pytest.raises(MountRefused):
        helper.service.unmount(name, lazy=True)
    assert not helper.mount_root.exists() or not any(helper.mount_root.iterdir())


@pytest.mark.parametrize(
    ("devnode", "code"),
    [
        ("/dev/null", "not_block_device"),
        ("/etc/passwd", "bad_devnode"),
        ("/dev/../etc/passwd", "bad_devnode"),
        ("/dev/does-not-exist", "bad_devnode"),
        ("relative/sda1", "bad_devnode"),
    ],
)
def test_rejects_devnodes_that_are_not_block_devices(
    helper: Helper, devnode: str, code: str
) -> None:
    assert _refusal(helper.service, devnode, "rec") == code


def test_rejects_a_device_without_an_allowed_filesystem(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    loop = make_loop(blank=True)
    assert _refusal(helper.service, loop.devnode, "rec") == "filesystem_not_allowed"
    assert not (helper.mount_root / "rec").exists()


def test_default_policy_rejects_untagged_devices(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    # No udev rule tagged this loop device a recorder: the production policy refuses it.
    loop = make_loop("ext4")
    helper.service.config.policy = UdevTagPolicy()
    assert _refusal(helper.service, loop.devnode, "rec") in {"untagged", "unknown_device"}
    assert mounted_at(read_mountinfo(), str(helper.mount_root / "rec")) is None


def test_refuses_a_mount_root_that_is_not_root_owned(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    loop = make_loop("ext4")
    helper.mount_root.mkdir(mode=0o750)
    os.chown(helper.mount_root, AGENT_UID, AGENT_GID)  # the agent swapped in its own dir
    assert _refusal(helper.service, loop.devnode, "rec") == "bad_mount_root"


def test_refuses_a_symlinked_mount_point(
        helper: Helper, make_loop: Callable[..., LoopDevice], tmp_path: Path) -> None:
    loop = make_loop("ext4")
    helper.mount_root.mkdir(mode=0o750)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (helper.mount_root / "rec").symlink_to(target)
    assert _refusal(helper.service, loop.devnode, "rec") == "bad_mount_point"
    assert mounted_at(read_mountinfo(), str(target)) is None


def test_one_request_per_recorder_at_a_time_others_go_on(helper: Helper) -> None:
    service = helper.service
    with service._reserve(("name", "rec")):  # a mount of "rec" hanging in the kernel
        with pytest.raises(MountRefused) as refused:
            service.unmount("rec", lazy=True)
        assert refused.value.code == "in_progress"
        assert service.unmount("other", lazy=True).endswith("/other")  # not held up
    assert service.unmount("rec", lazy=True).endswith("/rec")


def test_mount_root_behind_a_symlink(tmp_path: Path, make_loop: Callable[..., LoopDevice]) -> None:
    from agent.mount.helper import HelperConfig
    from agent.mount.policy import ProbePolicy

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    service = MountService(HelperConfig(tmp_path / "link" / "media", AGENT_UID, AGENT_GID,
                                        ProbePolicy()))
    loop = make_loop("ext4")
    path = service.mount(loop.devnode, "rec")
    assert path == str(tmp_path / "real" / "media" / "rec")  # as mountinfo names it
    assert service.mount(loop.devnode, "rec") == path  # recognised as already ours
    assert service.unmount("rec", lazy=False) == path
    assert mounted_at(read_mountinfo(), path) is None


async def test_stale_mount_under_the_same_key_is_replaced(
        helper: Helper, make_loop: Callable[..., LoopDevice]) -> None:
    # The agent stopped with BWC1 mounted; the recorder came back as another block device.
    old, new = make_loop("ext4"), make_loop("ext4")
    mounter = HelperMounter(helper.socket_path)
    path = await mounter.mount("BWC1", _storage(old))
    assert await mounter.mount("BWC1", _storage(new)) == path
    entry = mounted_at(read_mountinfo(), str(path))
    assert entry is not None and entry.source == new.devnode
    await mounter.unmount("BWC1")
