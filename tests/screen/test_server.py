"""dock-screen's HTTP surface: read-only, loopback Host check, token, pages, live events.

The server runs for real on a free loopback port; the agent's replies come from a canned
fetch (the end-to-end test in tests/e2e runs it against a real agent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.control import ControlClientError
from agent.screen.server import ScreenServer, StatePoller, serve

TOKEN = "s3cret-token-for-tests"


class Agent:
    def __init__(self) -> None:
        self.status: dict[str, Any] | None = {"dock_id": "d1", "bays": []}

    async def fetch(self, cmd: str) -> Mapping[str, Any]:
        if self.status is None:
            raise ControlClientError("agent not running (no socket at /x)")
        return self.status if cmd == "status" else {"clock_synchronised": True}


async def start(agent: Agent, token: str | None = None,
                language: str = "auto") -> tuple[asyncio.Task[None], int]:
    poller = StatePoller(agent.fetch, 0.05)
    server = ScreenServer(poller, language=language, token=token, loopback_only=True)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(server, "127.0.0.1", 0, lambda h, p: ready.set_result(p)))
    async with asyncio.timeout(30):
        return task, await ready


@pytest.fixture
async def screen() -> AsyncIterator[tuple[Agent, int]]:
    agent = Agent()
    task, port = await start(agent)
    yield agent, port
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def http(port: int, path: str, *, method: str = "GET", host: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *hdrs = head.decode().split("\r\n")
    parsed: dict[str, str] = {}
    for h in hdrs:
        k, _, v = h.partition(":")
        parsed.setdefault(k.lower(), v.strip())
    return int(status.split()[1]), parsed, body


async def test_read_only_and_loopback_names_only(screen: tuple[Agent, int]) -> None:
    _, port = screen
    assert (await http(port, "/", method="POST"))[0] == 405
    assert (await http(port, "/", method="DELETE"))[0] == 405
    # A page elsewhere that rebinds its own name to 127.0.0.1 must not read the board.
    assert (await http(port, "/board.json", host="evil.example:80"))[0] == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert (await http(port, "/board.json", host=host))[0] == 200, host
    assert (await http(port, "/static/../server.py"))[0] == 404
    code, headers, _ = await http(port, "/static/screen.js")
    assert code == 200 and headers["content-type"].startswith("text/javascript")
    assert "script-src 'self'" in headers["content-security-policy"]


async def test_token_required_when_configured() -> None:
    agent = Agent()
    task, port = await start(agent, token=TOKEN)
    try:
        assert (await http(port, "/"))[0] == 403
        assert (await http(port, "/?token=wrong"))[0] == 403
        code, headers, _ = await http(port, f"/?token={TOKEN}", host="dock.lan:8470")
        assert code == 200 and "HttpOnly" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        assert (await http(port, "/board.json", headers={"Cookie": cookie}))[0] == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http(port, "/board.json", headers=bearer))[0] == 200
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_page_language_and_no_recorder_data_in_markup(screen: tuple[Agent, int]) -> None:
    agent, port = screen
    agent.status = {"dock_id": "d1", "bays": [{"bay": "1", "serial": "</script><b>x",
                                               "state": "released"}]}
    _, _, body = await http(port, "/", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    page = body.decode()
    assert 'data-lang="zh_CN"' in page and "可领用" in page
    assert "</script><b>" not in page  # recorder data only travels as JSON over /events
    _, headers, body = await http(port, "/?lang=en", headers={"Accept-Language": "zh-CN"})
    assert 'data-lang="en"' in body.decode()
    cookie = headers["set-cookie"].split(";")[0]
    _, _, body = await http(port, "/preshift", headers={"Accept-Language": "zh-CN",
                                                         "Cookie": cookie})
    assert 'data-lang="en"' in body.decode() and 'data-view="preshift"' in body.decode()


async def test_events_follow_the_agent(screen: tuple[Agent, int]) -> None:
    agent, port = screen
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())

    async def next_board() -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if line.startswith(b"data: "):
                board: dict[str, Any] = json.loads(line[6:])
                return board

    try:
        assert b"text/event-stream" in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        board = await next_board()
        while not board["header"]["agent_reachable"]:  # the first poll may still be running
            board = await next_board()
        agent.status = None
        board = await next_board()
        assert board["header"]["agent_reachable"] is False
        assert "agent not running" in board["header"]["agent_error"]
        agent.status = {"dock_id": "d1", "bays": [{"bay": "2", "state": "detected"}]}
        board = await next_board()
        assert [b["bay"] for b in board["bays"]] == ["2"]
    finally:
        writer.close()


def test_lan_without_token_refused(tmp_path: Path) -> None:
    config = tmp_path / "dock.toml"
    config.write_text('[dock]\nid = "d1"\n[devices]\nsource = "sim"\n[[devices.allow]]\n'
                      'vid = "1209"\npid = "d0c5"\n[mqtt]\nenabled = false\n'
                      '[screen]\nlisten = "0.0.0.0"\n')
    proc = subprocess.run([sys.executable, "-m", "agent.screen.cli", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "token_file" in proc.stderr, proc.stderr


async def test_event_streams_are_bounded(screen: tuple[Agent, int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.screen import server as server_module

    _, port = screen
    monkeypatch.setattr(server_module, "MAX_STREAMS", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    try:
        await asyncio.wait_for(reader.readuntil(b"data: "), 30)  # the first stream is open
        assert (await http(port, "/events"))[0] == 503
    finally:
        writer.close()
    for _ in range(300):  # the server notices the closed stream on its next write
        if (await http(port, "/board.json"))[0] == 200 and await _stream_opens(port):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a closed stream was never released")


async def _stream_opens(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    try:
        line = await asyncio.wait_for(reader.readline(), 30)
        return b" 200 " in line
    finally:
        writer.close()
