"""The helper's socket: peer credentials, the wire protocol, and starting it for real."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.mount.errors import HelperUnavailable, MountRefused, ProtocolError
from agent.mount.helper import check_peer, peer_credentials
from agent.mount.mounter import HelperMounter
from agent.mount.policy import ProbePolicy
from agent.mount.protocol import (
    MountRequest,
    Reply,
    UnmountRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

from .conftest import Helper, needs_root, start_helper


def _exchange(path: Path, payload: bytes) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError):  # a refused peer is hung up on at once
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_peer_credentials_of_a_real_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        pid, uid, gid = peer_credentials(a)
        assert (pid, uid, gid) == (os.getpid(), os.geteuid(), os.getegid())
        assert check_peer(a, frozenset({os.geteuid()})) == os.geteuid()
        with pytest.raises(MountRefused) as refused:
            check_peer(a, frozenset({os.geteuid() + 1}))
        assert refused.value.code == "peer_not_allowed"


@needs_root
def test_a_client_with_another_uid_is_refused() -> None:
    # The socket must be reachable by the other uid, so this helper lives in a 0755 dir.
    base = Path(tempfile.mkdtemp(prefix="dock-mount-test-", dir="/tmp"))
    base.chmod(0o755)
    helper, thread = start_helper(base, ProbePolicy())
    helper.socket_path.chmod(0o777)
    try:
        replies = _as_other_user(helper)
    finally:
        helper.server.close()
        thread.join(5)
        shutil.rmtree(base, ignore_errors=True)
    assert replies == [
        {"ok": False, "code": "peer_not_allowed", "error": "uid 54321 may not use the mount helper"}
    ]


def _as_other_user(helper: Helper) -> object:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become an unrelated user, then ask for a mount
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(54321)
            os.setuid(54321)
            replies = _exchange(helper.socket_path, b'{"op":"unmount","name":"rec"}\n')
            os.write(write_fd, json.dumps(replies).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        replies = json.loads(r.read() or b"null")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return replies


@needs_root
@pytest.mark.parametrize(
    "payload",
    [
        b"not json\n",
        b'["mount"]\n',
        b'{"op":"format","devnode":"/dev/sda"}\n',
        b'{"op":"mount","devnode":"/dev/sda1","name":"x","options":"rw"}\n',
        b'{"op":"unmount","name":7}\n',
        b'{"op":"mount","devnode":"' + b"a" * 5000 + b'","name":"x"}\n',
    ],
)
def test_bad_requests_get_a_clear_error(helper: Helper, payload: bytes) -> None:
    replies = _exchange(helper.socket_path, payload + b'{"op":"unmount","name":"rec"}\n')
    assert replies[0]["ok"] is False and replies[0]["code"] == "bad_request"
    assert len(replies) == 1  # the connection is dropped after a malformed line


@needs_root
def test_several_requests_on_one_connection(helper: Helper) -> None:
    replies = _exchange(
        helper.socket_path,
        b'{"op":"unmount","name":"a"}\n{"op":"unmount","name":"b","lazy":true}\n',
    )
    assert [r["ok"] for r in replies] == [True, True]
    assert replies[1]["path"] == str(helper.mount_root / "b")


def test_protocol_round_trip() -> None:
    for request in (MountRequest("/dev/sda1", "rec"), UnmountRequest("rec", True)):
        assert decode_request(encode_request(request)) == request
    reply = Reply(False, code="busy", error="in use")
    assert decode_reply(encode_reply(reply)) == reply
    with pytest.raises(ProtocolError):
        decode_reply(b'{"path": "/x"}\n')


async def test_mounter_without_a_helper(tmp_path: Path) -> None:
    mounter = HelperMounter(tmp_path / "missing.sock")
    with pytest.raises(HelperUnavailable, match="cannot reach"):
        await mounter.unmount("BWC1")


async def test_mounter_when_the_helper_does_not_answer(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(1)
        mounter = HelperMounter(path, timeout_s=0.2)
        with pytest.raises(HelperUnavailable, match="did not answer unmount"):
            await mounter.unmount("BWC1")


async def test_mounter_when_the_helper_hangs_up(tmp_path: Path) -> None:
    path = tmp_path / "rude.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.bind(str(path))
        rude.listen(1)
        mounter = HelperMounter(path, timeout_s=10)

        async def hang_up() -> None:
            conn, _ = await asyncio.get_running_loop().sock_accept(rude)
            conn.close()

        rude.setblocking(False)
        task = asyncio.create_task(hang_up())
        with pytest.raises(HelperUnavailable, match="closed the connection"):
            await mounter.unmount("BWC1")
        await task


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the helper accepts connections (or died); up to 60 s on a loaded machine."""
    for _ in range(1200):
        if proc.poll() is not None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.05)
                continue
            return


def _helper_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


@needs_root
async def test_helper_process_listening_itself(tmp_path: Path) -> None:
    sock = tmp_path / "mount" / "mount.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.mount.helper", "--socket", str(sock),
         "--mount-root", str(tmp_path / "media"), "--owner", "nobody"],
        env=_helper_env(), stderr=subprocess.PIPE,
    )
    try:
        _wait_for(sock, proc)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        st = sock.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 65534, 0o660)
        await HelperMounter(sock).unmount("BWC1")  # root may talk to it; nothing mounted
        assert (tmp_path / "media").stat().st_mode & 0o777 == 0o750
    finally:
        proc.terminate()
        proc.wait(10)


@needs_root
async def test_helper_process_socket_activated(tmp_path: Path) -> None:
    # What systemd does: bind and listen, then exec the helper with the socket on fd 3.
    sock = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen(4)
    launcher = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'agent.mount.helper', *sys.argv[2:]])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, str(listener.fileno()),
         "--socket", str(tmp_path / "unused.sock"), "--mount-root", str(tmp_path / "media"),
         "--owner", "nobody"],
        env=_helper_env(), pass_fds=(listener.fileno(),),
    )
    listener.close()
    try:
        await HelperMounter(sock, timeout_s=30).unmount("BWC1")
        assert not (tmp_path / "unused.sock").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def _bounded_helper(tmp_path: Path, **limits: float) -> tuple[Helper, threading.Thread]:
    from agent.mount.helper import HelperConfig, HelperServer, MountService

    service = MountService(HelperConfig(tmp_path / "media", os.geteuid(), os.getegid(),
                                        ProbePolicy()))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "bounded.sock"))
    listener.listen(16)
    server = HelperServer(service, listener, **limits)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return Helper(service, server, tmp_path / "bounded.sock", tmp_path / "media"), thread


def _connection_threads() -> int:
    return sum(t.name == "dock-mount-conn" for t in threading.enumerate())


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@needs_root
def test_connections_are_bounded_and_the_rest_wait(tmp_path: Path) -> None:
    helper, thread = _bounded_helper(tmp_path, max_connections=2, idle_timeout_s=600)
    clients = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(6)]
    try:
        for c in clients:
            c.connect(str(helper.socket_path))  # idle: they say nothing
        _wait_until(lambda: _connection_threads() == 2)
        waiting = clients[2]
        waiting.sendall(b'{"op":"unmount","name":"rec"}\n')
        readable, _, _ = select.select([waiting], [], [], 0.5)
        assert not readable  # in the backlog: no thread was started for it
        assert _connection_threads() == 2
        clients[0].close()  # a slot frees: the waiting client is served
        waiting.settimeout(60)
        reply = json.loads(waiting.makefile("rb").readline())
        assert reply["ok"] is True
        assert _connection_threads() <= 2
    finally:
        for c in clients:
            c.close()
        helper.server.close()
        thread.join(5)


@needs_root
def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    helper, thread = _bounded_helper(tmp_path, max_connections=1, idle_timeout_s=0.2)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(str(helper.socket_path))
            idle.settimeout(60)
            assert idle.recv(1) == b""  # the helper hung up on it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as next_client:
            next_client.connect(str(helper.socket_path))
            next_client.settimeout(60)
            next_client.sendall(b'{"op":"unmount","name":"rec"}\n')
            assert json.loads(next_client.makefile("rb").readline())["ok"] is True
    finally:
        helper.server.close()
        thread.join(5)
