"""The root helper against an agent that races it: the mount root lives in a directory the
agent owns, and the agent swaps the root for symlinks to files and directories it must not
touch, as fast as it can, while the helper is asked to (re)create the root again and again.
Nothing outside may change owner or mode; the helper keeps serving."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.mount.policy import ProbePolicy

from .conftest import AGENT_GID, AGENT_UID, needs_root, start_helper

REQUESTS = 4000


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(RENAME_EXCHANGE): swap two names in one step (False if one is missing)."""
    return bool(_libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) == 0)


def _racer(media: Path, victims: list[Path]) -> None:
    """Child process, as the agent's user: the moment the helper has made the mount root,
    swap it (atomically) for a symlink to a victim, then clear up for the next round."""
    os.setgroups([])
    os.setgid(AGENT_GID)
    os.setuid(AGENT_UID)
    decoy = media.with_name("decoy")
    n = 0
    while True:
        n += 1
        with contextlib.suppress(OSError):
            os.symlink(victims[n % len(victims)], decoy)
        while not _exchange(decoy, media):  # fails until the helper's mkdir
            pass
        os.sched_yield()  # let the helper run on into its next step
        with contextlib.suppress(OSError):
            os.unlink(media)
        with contextlib.suppress(OSError):
            os.rmdir(decoy)


@pytest.fixture
def agent_owned_run() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dock-mount-race-", dir="/tmp"))
    base.chmod(0o755)  # the agent's user must reach its runtime directory
    run = base / "run"
    run.mkdir()
    os.chown(run, AGENT_UID, AGENT_GID)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _state(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@needs_root
def test_symlink_swaps_of_the_mount_root_touch_nothing_outside(agent_owned_run: Path) -> None:
    base = agent_owned_run
    victim_file = base / "shadow"
    victim_file.write_text("root's secret\n")
    victim_file.chmod(0o600)
    victim_dir = base / "private"
    victim_dir.mkdir(0o700)
    victim_dir.chmod(0o700)
    before = {p: _state(p) for p in (victim_file, victim_dir)}

    helper, thread = start_helper(base, ProbePolicy())
    media = helper.mount_root
    assert media.parent == base / "run"
    pid = os.fork()
    if pid == 0:
        try:
            _racer(media, [victim_file, victim_dir])
        finally:
            os._exit(1)
    replies: list[dict[str, object]] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(helper.socket_path))
            reader = conn.makefile("rb")
            for _ in range(REQUESTS):  # each one opens (and may create) the mount root
                conn.sendall(b'{"op":"unmount","name":"rec"}\n')
                replies.append(json.loads(reader.readline()))
                if any(_state(p) != before[p] for p in before):
                    break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        assert {p: _state(p) for p in before} == before
        assert victim_file.read_text() == "root's secret\n"
        codes = {r.get("code") for r in replies if not r["ok"]}
        assert codes <= {"bad_mount_root", "eloop", "enoent", "enotdir", "eexist"}, codes
        # once the agent stops racing, the helper makes a proper root and goes on serving
        for leftover in (media, media.with_name("decoy")):
            if leftover.is_symlink():
                leftover.unlink()
            elif leftover.is_dir():
                leftover.rmdir()
        assert helper.service.unmount("rec", lazy=True) == str(media / "rec")
        assert _state(media) == (0, AGENT_GID, 0o750)
    finally:
        helper.server.close()
        thread.join(5)

