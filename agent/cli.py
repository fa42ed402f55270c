"""`dock-agent`: run the dock agent, or check its configuration.

Exit codes: 0 success; 1 the agent failed at run time; 2 the configuration (or the command
line) is invalid, in which case nothing was started.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH, ConfigInvalid, load_settings, summary
from agent.devices.udev_rules import udev_rules
from agent.logs import setup_logging
from agent.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dock-agent",
        description="Docking-station agent for body-worn recorders: detect, check, offload "
        "with custody, report over MQTT.",
    )
    p.add_argument("--config", type=Path, default=None, metavar="PATH",
                   help=f"configuration file (default {DEFAULT_CONFIG_PATH})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check-config", type=Path, metavar="PATH",
                      help="validate PATH, print a one-line summary and exit")
    mode.add_argument("--udev-rules", action="store_true",
                      help="print udev rules for the recorders the config allows, and exit")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   dest="overrides", help="override one setting (VALUE in TOML syntax; "
                   "bare words are strings); may be repeated")
    p.add_argument("--version", action="version", version=f"dock-agent {__version__}")
    return p


def _load(path: Path, overrides: Sequence[str], *, check_files: bool = True) -> Settings | None:
    try:
        return load_settings(path, overrides=overrides, check_files=check_files)
    except ConfigInvalid as exc:
        n = len(exc.issues)
        print(f"dock-agent: invalid configuration ({n} problem{'s' if n != 1 else ''}):",
              file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check_config is not None:
        settings = _load(args.check_config, args.overrides)
        if settings is None:
            return EXIT_CONFIG
        print(f"{args.check_config}: OK: {summary(settings)}")
        return EXIT_OK

    path: Path = args.config or DEFAULT_CONFIG_PATH
    if args.udev_rules:
        settings = _load(path, args.overrides, check_files=False)
        if settings is None:
            return EXIT_CONFIG
        sys.stdout.write(udev_rules(settings.devices, source=str(path)))
        return EXIT_OK

    settings = _load(path, args.overrides)
    if settings is None:
        return EXIT_CONFIG
    log = setup_logging(settings.logging)
    # `kill -USR1` logs every thread's stack (a stuck agent explains itself)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    from agent.app import StartupError, run_agent  # the daemon's imports: only to run it

    try:
        return asyncio.run(run_agent(settings, log=log))
    except StartupError as exc:  # a file or directory it needs is unusable: like config
        log.error("dock agent cannot start: %s", exc)  # noqa: TRY400 (no traceback)
        print(f"dock-agent: cannot start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("dock agent failed")
        return EXIT_FAILED
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
