"""`dock-screen`: serve the dock's readiness board to a browser.

Reads the agent's config for the control socket and the [screen] section; flags override
it. Prints `dock-screen: serving http://HOST:PORT/` once listening (port 0 picks a free
port, for tests). Exit codes: 0 stopped, 2 invalid configuration or command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__, sdnotify
from agent.config import DEFAULT_CONFIG_PATH, ConfigInvalid, load_settings
from agent.logs import setup_logging
from agent.screen import i18n
from agent.screen.lights import BayLights, LightsError
from agent.screen.server import ScreenServer, StatePoller, is_loopback, serve, socket_fetcher
from agent.settings import ScreenSettings, Settings

EXIT_OK, EXIT_CONFIG = 0, 2
log = logging.getLogger("agent.screen")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dock-screen",
                                description="The dock's readiness board, served to a browser.")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, metavar="PATH",
                   help=f"the agent's configuration file (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--listen", metavar="ADDRESS", help="address to bind (overrides [screen])")
    p.add_argument("--port", type=int, metavar="N", help="port (0: any free port)")
    p.add_argument("--language", choices=("auto", *i18n.LANGUAGES))
    p.add_argument("--version", action="version", version=f"dock-screen {__version__}")
    return p


class _Refused(Exception):
    """A configuration or command-line problem: the message is printed, exit 2."""


def _token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _Refused(f"dock-screen: cannot read token_file {path}: {exc.strerror}") from exc
    if len(token) < 16:
        raise _Refused(f"dock-screen: the token in {path} is shorter than 16 characters")
    return token


def _settings(path: Path) -> Settings:
    try:
        return load_settings(path, check_files=False)
    except ConfigInvalid as exc:
        raise _Refused("\n".join(["dock-screen: invalid configuration:",
                                   *(f"  {issue}" for issue in exc.issues)])) from None


def _endpoint(args: argparse.Namespace, cfg: ScreenSettings) -> tuple[str, int, str | None]:
    """Where to listen and the token readers must present (None: loopback only)."""
    host: str = args.listen or cfg.listen
    port: int = cfg.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise _Refused(f"dock-screen: port {port} out of range")
    token = _token(cfg.token_file)
    if token is None and not is_loopback(host):
        raise _Refused(f"dock-screen: listen = {host!r} is not loopback: set [screen] "
                       "token_file so that only holders of the token can read the board")
    return host, port, token


def _lights(cfg: ScreenSettings) -> BayLights | None:
    if not cfg.lights:
        return None
    if not cfg.light_pins:
        raise _Refused("dock-screen: [screen] lights = true needs light_pins")
    try:
        return BayLights.open(cfg.light_pins)
    except LightsError as exc:
        raise _Refused(f"dock-screen: {exc}") from exc


def _listening(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"dock-screen: serving http://{shown}:{port}/", flush=True)
    sdnotify.notify("READY=1")


async def _serve_until_stopped(server: ScreenServer, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serve(server, host, port, _listening)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args.config)
        cfg = settings.screen
        host, port, token = _endpoint(args, cfg)
        setup_logging(settings.logging)
        lights = _lights(cfg)
    except _Refused as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    poller = StatePoller(socket_fetcher(settings.control_socket), cfg.poll_interval_s,
                         on_board=(lambda b: lights.show(b.bays)) if lights else None)
    server = ScreenServer(poller, language=args.language or cfg.language, token=token,
                          loopback_only=is_loopback(host))
    try:
        asyncio.run(_serve_until_stopped(server, host, port))
    except OSError as exc:
        print(f"dock-screen: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        if lights is not None:
            lights.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
