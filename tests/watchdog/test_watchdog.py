"""systemd's watchdog is pinged only while the essential tasks live and the loop is responsive."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.watchdog import LoopLag, liveness_problems, run_watchdog, watch_stop

HANG_GUARD_S = 60.0


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # 1 s: ping every 0.5 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    return sock


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


async def test_pings_while_alive_and_stops_when_a_task_dies(notify_socket: socket.socket) -> None:
    alive = asyncio.create_task(asyncio.sleep(3600))
    problems: list[list[str]] = []
    dog = asyncio.create_task(run_watchdog(LoopLag(), lambda: {"publisher": alive},
                                           problems.append))
    async with asyncio.timeout(60):
        while not received(notify_socket):
            await asyncio.sleep(0.01)
    assert problems == []

    alive.cancel()
    await asyncio.gather(alive, return_exceptions=True)
    async with asyncio.timeout(60):
        while not problems:
            await asyncio.sleep(0.01)
    assert problems[-1] == ["publisher stopped"]
    received(notify_socket)  # drop pings sent before the death was seen
    # Two more watchdog rounds (each reports the problem instead of pinging): no ping.
    seen = len(problems)
    async with asyncio.timeout(60):
        while len(problems) < seen + 2:
            await asyncio.sleep(0.01)
    assert b"WATCHDOG=1" not in b"".join(received(notify_socket))
    dog.cancel()
    await asyncio.gather(dog, return_exceptions=True)


def test_a_stuck_loop_is_a_problem() -> None:
    lag = LoopLag()
    assert liveness_problems(lag, {}) == []
    lag.worst_recent_s = 6.0
    assert liveness_problems(lag, {}) == ["event loop lag 6.0 s"]


async def test_no_watchdog_configured_means_no_pings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(run_watchdog(LoopLag(), dict, lambda p: None), 1)  # returns at once


async def test_a_slow_stop_logs_every_thread_and_task_stack(tmp_path: Path) -> None:
    """A stop still running after the bound logs where each thread and each task waits."""
    release = threading.Event()

    def stuck_writer() -> None:
        release.wait()

    async def stuck_session() -> None:
        await asyncio.Event().wait()

    worker = threading.Thread(target=stuck_writer, name="stuck-writer")
    worker.start()
    task = asyncio.create_task(stuck_session(), name="stuck-session")
    path = tmp_path / "stacks.log"
    with path.open("w") as out:
        disarm = watch_stop(0.2, 3600, out)
        try:
            deadline = time.monotonic() + 60
            while "stuck_session" not in path.read_text() or "stuck_writer" not in (
                    path.read_text()):
                assert time.monotonic() < deadline, path.read_text()
                await asyncio.sleep(0.05)
        finally:
            disarm()
            release.set()
            task.cancel()
            worker.join()
    text = path.read_text()
    assert "task stuck-session" in text and "in stuck_writer" in text



HUNG_STOP = """
import asyncio, sys, threading
from agent.watchdog import watch_stop

def writer_never_joined() -> None:
    threading.Event().wait()

async def main() -> None:
    watch_stop(0.2, 1.0)
    worker = threading.Thread(target=writer_never_joined)
    worker.start()
    await asyncio.to_thread(worker.join)  # a stop that waits for it without a deadline

asyncio.run(main())
"""


def test_a_stop_that_never_ends_exits_after_the_limit_with_the_stacks() -> None:
    """The bound holds wherever the stop waits (here: a thread never joined): status 1."""
    proc = subprocess.run([sys.executable, "-c", HUNG_STOP], capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 1, proc.stderr
    assert "still stopping after 0.2 s" in proc.stderr
    assert "Timeout (0:00:01)!" in proc.stderr and "writer_never_joined" in proc.stderr
