"""The control socket and dockctl's live commands, over a real Unix socket."""

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.control import ControlClientError, ControlServer, request
from agent.dockctl.cli import main
from agent.dockctl.common import EXIT_FINDING, EXIT_OK, EXIT_UNREACHABLE
from agent.dockctl.render import progress_bar, table

READY: dict[str, object] = {
    "bay": "1", "serial": "BWC00001", "officer": "0012345", "verdict": "READY", "reasons": [],
    "eta_s": None}
LOW = {"bay": "2", "serial": "BWC00002", "officer": "0012346", "verdict": "NOT_READY",
       "reasons": [{"code": "battery_low", "message": "battery 40% < 90%"}], "eta_s": None}


async def _serve(path: Path, recorders: list[dict[str, Any]]) -> asyncio.Task[None]:
    async def readiness(_: dict[str, Any]) -> dict[str, Any]:
        return {"recorders": recorders}

    async def boom(_: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("view broke")

    server = ControlServer(path, {"readiness": readiness, "boom": boom})
    task = asyncio.create_task(server.serve())
    for _ in range(6000):  # up to 60 s on a loaded machine
        if path.exists():
            break
        await asyncio.sleep(0.01)
    return task


async def test_requests_errors_and_permissions(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    task = await _serve(sock, [READY])
    try:
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode & 0o007 == 0, oct(mode)  # nobody outside the agent's user/group
        result = await asyncio.to_thread(request, sock, "readiness")
        assert result == {"recorders": [READY]}
        with pytest.raises(ControlClientError, match="unknown command 'nope'"):
            await asyncio.to_thread(request, sock, "nope")
        with pytest.raises(ControlClientError, match="RuntimeError: view broke"):
            await asyncio.to_thread(request, sock, "boom")
        # Garbage on the socket gets an error reply, and the server keeps serving.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"not json\n")
        reply = json.loads(await reader.readline())
        assert reply["ok"] is False and "malformed" in reply["error"]
        writer.close()
        assert await asyncio.to_thread(request, sock, "readiness")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not sock.exists()


async def test_dockctl_readiness_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = tmp_path / "control.sock"
    task = await _serve(sock, [READY, LOW])
    try:
        code = await asyncio.to_thread(main, ["--socket", str(sock), "readiness"])
        out = capsys.readouterr().out
        assert code == EXIT_FINDING
        assert "BWC00002" in out and "battery 40% < 90%" in out and "NOT_READY" in out
        code = await asyncio.to_thread(main, ["--socket", str(sock), "readiness", "--json"])
        assert code == EXIT_FINDING
        assert json.loads(capsys.readouterr().out)["recorders"][1]["verdict"] == "NOT_READY"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    task = await _serve(sock, [READY])
    try:
        assert await asyncio.to_thread(main, ["--socket", str(sock), "readiness"]) == EXIT_OK
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_dockctl_says_what_to_do_when_agent_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--socket", str(tmp_path / "absent.sock"), "status"])
    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert "agent not running" in err and "systemctl status dock-agent" in err


def test_table_aligns_wide_characters() -> None:
    out = table(["BAY", "OFFICER"], [["1", "张伟"], ["10", "Li"]]).splitlines()
    assert out[2] == "1    张伟"
    assert out[3] == "10   Li"
    assert progress_bar(50, 100, width=10) == "[#####.....]  50.0%"
    assert progress_bar(0, 0, width=4) == "[    ]"
