"""`dock-sim`: a virtual dock with N bays, driven by a scenario file and/or stdin commands.

    dock-sim --socket /run/dock-agent/sim.sock --scenario demo.toml
    dock-sim --socket /tmp/sim.sock --bays 4 --interactive     # then: plug 1 BWC00001

Stdin commands (--interactive): `plug <bay> <serial>` (a scenario recorder, or a default
one with that serial), `unplug <bay>`, `list`, `quit`. SIGINT/SIGTERM unplug everything
(unmounting any FUSE storage) and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

from hw_sim.dock import VirtualDock
from hw_sim.errors import SimError
from hw_sim.recorder import DEFAULT_FLEET_SECRET, fleet_secret_from_file
from hw_sim.scenario import Scenario, load_scenario, run_timeline
from hw_sim.spec import RecorderSpec

log = logging.getLogger("dock-sim")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dock-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", type=Path, required=True, help="announcement socket to serve")
    p.add_argument("--bays", type=int, default=None, help="number of bays (default 4)")
    p.add_argument("--scenario", type=Path, help="TOML scenario: recorders and timeline")
    p.add_argument("--workdir", type=Path, help="recorder storage (default: temporary)")
    p.add_argument("--secret-file", type=Path, help="fleet secret file (default: built-in)")
    p.add_argument("--interactive", action="store_true", help="read commands from stdin")
    p.add_argument("--exit-when-done", action="store_true",
                   help="exit once the scenario timeline has been played")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Feed stdin lines into `queue` from a daemon thread (works for ttys, pipes and files)."""

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="dock-sim-stdin", daemon=True).start()


async def _command(dock: VirtualDock, scenario: Scenario | None, line: str) -> bool:
    """Run one stdin command; False means quit."""
    words = line.split()
    if not words:
        return True
    cmd, args = words[0], words[1:]
    try:
        if cmd == "plug" and len(args) == 2:
            bay, serial = args
            spec = scenario.recorders.get(serial) if scenario else None
            rec = await dock.plug(bay, spec or RecorderSpec(serial=serial))
            print(f"plugged {serial} into bay {bay}: {rec.tty_path}", flush=True)
        elif cmd == "unplug" and len(args) == 1:
            await dock.unplug(args[0])
            print(f"unplugged bay {args[0]}", flush=True)
        elif cmd == "list" and not args:
            for label, held, storage in dock.listing():
                plugged = dock.recorders.get(label)
                tty = plugged.tty_path if plugged else "-"
                print(f"bay {label}: {held or '-'} tty={tty} storage={storage or '-'}", flush=True)
        elif cmd in ("quit", "exit"):
            return False
        else:
            print("commands: plug <bay> <serial> | unplug <bay> | list | quit", flush=True)
    except SimError as e:
        print(f"error: {e}", flush=True)
    return True


async def _main(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario) if args.scenario else None
    secret = fleet_secret_from_file(args.secret_file) if args.secret_file else DEFAULT_FLEET_SECRET
    bays: int | list[str] = args.bays or (scenario.bays if scenario else 4)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with VirtualDock(bays, args.socket, workdir=args.workdir, secret=secret) as dock:
        print(f"dock-sim serving {args.socket} with bays {', '.join(dock.bays)}", flush=True)
        tasks: list[asyncio.Task[None]] = []
        if scenario is not None:
            async def play() -> None:
                await run_timeline(dock, scenario)
                print("timeline done", flush=True)
                if args.exit_when_done:
                    stop.set()
            tasks.append(asyncio.create_task(play()))
        if args.interactive:
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            _stdin_lines(loop, lines)

            async def interact() -> None:
                while (line := await lines.get()) is not None:
                    if not await _command(dock, scenario, line):
                        break
                stop.set()
            tasks.append(asyncio.create_task(interact()))
        await stop.wait()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, SimError):
                await t
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_main(args))
    except SimError as e:
        print(f"dock-sim: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
