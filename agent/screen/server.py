"""The dock screen's HTTP server: pages, static files and a server-sent event stream.

A deliberately small HTTP/1.1 subset on asyncio streams (GET and HEAD, one request per
connection, bounded request head): nothing here takes input beyond a path, a few headers
and a token. The board itself comes from `StatePoller`, which asks the agent over its
control socket and wakes every open event stream when what the screen shows changed.

Access: on loopback with no token configured, only requests whose Host names the
loopback are served (a web page elsewhere cannot rebind its name to read the board). With
a token every request must carry it (header, cookie set by a `?token=` link, or query).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.control import ControlClientError, request
from agent.screen import board, i18n

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".png": "image/png", ".svg": "image/svg+xml"}
MAX_HEAD = 8 * 1024
HEAD_TIMEOUT_S = 10.0
KEEPALIVE_S = 15.0
MAX_STREAMS = 32  # open event streams; a kiosk needs one, a few supervisors a few more
HEALTH_EVERY_S = 2.0
COOKIE = "dock_screen_token"
LANG_COOKIE = "dock_screen_lang"
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class ScreenError(Exception):
    """The screen cannot start as configured."""


# --- state from the agent -------------------------------------------------------------------

Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


def socket_fetcher(path: Path, timeout: float = 5.0) -> Fetch:
    """Read-only requests over the agent's control socket (dockctl's own client)."""
    async def fetch(cmd: str) -> Mapping[str, Any]:
        return await asyncio.to_thread(request, path, cmd, timeout)
    return fetch


class StatePoller:
    """Polls the agent and keeps the latest board; `changed` is set on every change."""

    def __init__(self, fetch: Fetch, interval_s: float,
                 on_board: Callable[[board.Board], None] | None = None) -> None:
        self.fetch = fetch
        self.interval_s = interval_s
        self.on_board = on_board  # e.g. the bay lights; called on every change
        self.payload = json.dumps(board.build(None, None, "starting").as_dict())
        self.version = 0
        self._cond = asyncio.Condition()
        self._health: Mapping[str, Any] = {}
        self._health_at = 0.0

    async def poll_once(self) -> None:
        status: Mapping[str, Any] | None
        error = None
        try:
            status = await self.fetch("status")
            if time.monotonic() - self._health_at >= HEALTH_EVERY_S:
                self._health_at = time.monotonic()
                try:
                    self._health = await self.fetch("health")
                except ControlClientError as exc:  # an older agent without `health`
                    log.debug("no health from the agent: %s", exc)
                    self._health = {}
        except ControlClientError as exc:
            status, error = None, str(exc).splitlines()[0]
        current = board.build(status, self._health, error)
        payload = json.dumps(current.as_dict())
        if payload != self.payload:
            if self.on_board is not None:
                try:
                    self.on_board(current)
                except Exception:  # lights are a convenience: the screen keeps serving
                    log.exception("updating the bay lights failed")
            async with self._cond:
                self.payload = payload
                self.version += 1
                self._cond.notify_all()

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # the screen must keep serving whatever the agent says
                log.exception("reading the agent's state failed")
            await asyncio.sleep(self.interval_s)

    async def wait_newer(self, version: int, within_s: float) -> bool:
        """Until the board is newer than `version`; False when `within_s` passed first."""
        async with self._cond:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._cond.wait_for(lambda: self.version != version)
            return self.version != version


# --- HTTP -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


class BadRequest(Exception):
    pass


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("request head too large") from exc
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise BadRequest("incomplete request") from exc
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadRequest("request head is not ASCII") from exc
    line, *rest = text.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    headers: dict[str, str] = {}
    for h in rest:
        if not h:
            continue
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("malformed header")
        headers[name.lower()] = value.strip()
    url = urlsplit(parts[1])
    return Request(parts[0], url.path, parse_qs(url.query), headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ScreenServer:
    def __init__(self, poller: StatePoller, *, language: str, token: str | None,
                 loopback_only: bool) -> None:
        self.poller = poller
        self.language = language
        self.token = token
        self.loopback_only = loopback_only
        self.static = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in STATIC_TYPES}
        self.streams = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                req = await read_request(reader)
            except BadRequest as exc:
                await self._send(writer, 400, "text/plain; charset=utf-8", str(exc).encode())
                return
            await self._route(req, reader, writer)
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, BrokenPipeError):
                await writer.wait_closed()

    def _authorised(self, req: Request) -> bool:
        if self.token is None:
            return not self.loopback_only or is_loopback(_host_name(req.headers.get("host", "")))
        offered = [req.cookie(COOKIE) or "", *req.query.get("token", [])]
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:].strip())
        want = self.token.encode()
        return any(hmac.compare_digest(o.encode(), want) for o in offered if o)

    async def _route(self, req: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if req.method not in ("GET", "HEAD"):
            await self._send(writer, 405, "text/plain; charset=utf-8", b"read-only screen\n",
                             extra=(("Allow", "GET, HEAD"),))
            return
        if not self._authorised(req):
            await self._send(writer, 403, "text/plain; charset=utf-8",
                             b"forbidden: open the screen's link with its token\n")
            return
        extra: tuple[tuple[str, str], ...] = ()
        if self.token is not None and req.query.get("token"):
            # Remember the token so later requests (and the event stream) carry it.
            extra = (("Set-Cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; "
                      "Path=/"),)
        head = req.method == "HEAD"
        if req.path in ("/", "/preshift"):
            asked = req.query.get("lang")
            lang = i18n.choose(self.language, asked[0] if asked else req.cookie(LANG_COOKIE),
                               req.headers.get("accept-language"))
            if asked and asked[0] in i18n.LANGUAGES:  # a choice made on the page sticks
                extra += ((("Set-Cookie", f"{LANG_COOKIE}={lang}; SameSite=Strict; Path=/")),)
            page = render_page("preshift" if req.path == "/preshift" else "board", lang)
            await self._send(writer, 200, "text/html; charset=utf-8", page.encode(), extra,
                             head=head)
        elif req.path == "/board.json":
            await self._send(writer, 200, "application/json", self.poller.payload.encode(),
                             extra, head=head)
        elif req.path == "/events":
            await self._events(reader, writer)
        elif req.path.startswith("/static/") and req.path[8:] in self.static:
            path = self.static[req.path[8:]]
            body = await asyncio.to_thread(path.read_bytes)
            await self._send(writer, 200, STATIC_TYPES[path.suffix], body, extra, head=head)
        else:
            await self._send(writer, 404, "text/plain; charset=utf-8", b"not found\n")

    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.streams >= MAX_STREAMS:
            await self._send(writer, 503, "text/plain; charset=utf-8", b"too many screens\n",
                             extra=(("Retry-After", "10"),))
            return
        self.streams += 1
        # The browser sends nothing more: end of input means it went away.
        gone = asyncio.ensure_future(reader.read(1))
        try:
            writer.write(_head(200, "text/event-stream; charset=utf-8", None, ()))
            version = -1
            while True:
                if version != self.poller.version:
                    version = self.poller.version
                    writer.write(f"event: board\ndata: {self.poller.payload}\n\n".encode())
                else:
                    writer.write(b": keep-alive\n\n")
                await writer.drain()
                newer = asyncio.ensure_future(self.poller.wait_newer(version, KEEPALIVE_S))
                await asyncio.wait({newer, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    newer.cancel()
                    return
        finally:
            gone.cancel()
            self.streams -= 1

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, code: int, ctype: str, body: bytes,
                    extra: tuple[tuple[str, str], ...] = (), *, head: bool = False) -> None:
        writer.write(_head(code, ctype, len(body), extra) + (b"" if head else body))
        await writer.drain()


REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 503: "Service Unavailable"}


def _head(code: int, ctype: str, length: int | None,
          extra: tuple[tuple[str, str], ...]) -> bytes:
    lines = [f"HTTP/1.1 {code} {REASONS[code]}", f"Content-Type: {ctype}",
             "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS),
             *(f"{k}: {v}" for k, v in extra)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def render_page(view: str, lang: str) -> str:
    """The page shell: the catalogue goes in as JSON data (never markup); screen.js builds
    every element from the board with textContent."""
    messages = i18n.catalogue(lang)
    data = json.dumps(messages, ensure_ascii=False).replace("<", "\\u003c")
    html_lang = "zh-CN" if lang == "zh_CN" else "en"
    title = escape(messages["title.preshift" if view == "preshift" else "nav.board"])
    return (
        "<!doctype html>\n"
        f'<html lang="{html_lang}" data-lang="{escape(lang)}" data-view="{escape(view)}">\n'
        "<head><meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        '<link rel="stylesheet" href="/static/screen.css">\n'
        '<link rel="stylesheet" href="/static/print.css" media="print">\n'
        f'<script type="application/json" id="messages">{data}</script>\n'
        '<script src="/static/screen.js" defer></script>\n'
        "</head>\n<body>\n"
        '<header id="header"></header>\n<div id="banner" hidden></div>\n'
        '<main id="main"></main>\n'
        "</body>\n</html>\n"
    )


async def serve(server: ScreenServer, host: str, port: int,
                on_listening: Callable[[str, int], None]) -> None:
    """Poll the agent and serve until cancelled."""
    srv = await asyncio.start_server(server.handle, host, port, limit=MAX_HEAD)
    sock = srv.sockets[0].getsockname()
    on_listening(str(sock[0]), int(sock[1]))
    async with srv, asyncio.TaskGroup() as tg:
        tg.create_task(server.poller.run(), name="poller")
        await srv.serve_forever()
