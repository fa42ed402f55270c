"""Debian's headless Chromium driven over the Chrome DevTools protocol (a websocket).

Just what the screen tests need: open a page at a viewport size with an Accept-Language,
evaluate JavaScript, wait for a condition in the page (polled under a generous deadline),
and save screenshots. Chromium runs in its own process group and profile directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

HANG_GUARD_S = 90.0


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(AssertionError):
    pass


class Browser:
    def __init__(self, workdir: Path, width: int = 800, height: int = 480) -> None:
        self.workdir = workdir
        self.width, self.height = width, height
        self.proc: asyncio.subprocess.Process | None = None
        self.ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self, accept_language: str = "en") -> None:
        exe = chromium_path()
        assert exe, "chromium is not installed (scripts/lib/bootstrap.sh installs it)"
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "chromium.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-features=Translate,MediaRouter", "--mute-audio", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--remote-debugging-port=0",
            f"--window-size={self.width},{self.height}", "about:blank",
            stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + HANG_GUARD_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise CdpError(f"chromium did not start:\n{self.log_tail()}")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await connect(page["webSocketDebuggerUrl"], max_size=64 << 20,
                                open_timeout=HANG_GUARD_S)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width,
                        height=self.height, deviceScaleFactor=1, mobile=False)
        await self.set_language(accept_language)

    async def set_language(self, accept_language: str) -> None:
        version = await self.send("Browser.getVersion")
        await self.send("Network.enable")
        await self.send("Network.setUserAgentOverride", userAgent=version["userAgent"],
                        acceptLanguage=accept_language)

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        n = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[n] = fut
        await self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        async with asyncio.timeout(HANG_GUARD_S):
            msg = await fut
        if "error" in msg:
            raise CdpError(f"{method}: {msg['error']}")
        result: dict[str, Any] = msg.get("result", {})
        return result

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && "
                            "document.body !== null && document.body.dataset.updates >= 1",
                            f"page {url} rendered")

    async def eval(self, expression: str) -> Any:
        reply = await self.send("Runtime.evaluate", expression=expression,
                                returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = HANG_GUARD_S,
                       interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(CdpError):  # a navigation in progress
                value = await self.eval(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                text = await self.eval("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n"
                                     f"page text:\n{text}")
            await asyncio.sleep(interval)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.workdir / "chromium.log").read_text(
                errors="replace").splitlines()[-30:])
        return ""

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as resp:
        return json.loads(resp.read())
