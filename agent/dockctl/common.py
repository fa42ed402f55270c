"""What every dockctl command shares: exit codes, where the agent's files are, output."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from agent.settings import Settings

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_CONFIG = Path("/etc/dock-agent/dock-agent.toml")

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    pass


class Unreachable(Exception):
    pass


class Paths:
    """Where the agent's socket, database and store are, from the config or flags."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.socket: Path | None = args.socket
        self.db: Path | None = args.db
        self.store: Path | None = args.store
        self.settings: Settings | None = None
        config: Path | None = args.config
        if config is None and DEFAULT_CONFIG.exists() and not (self.socket and self.db):
            config = DEFAULT_CONFIG
        if config is not None:
            from agent.config import ConfigError, load_config

            try:
                settings = load_config(config)
            except ConfigError as exc:
                raise UsageError(str(exc)) from exc
            self.settings = settings
            self.socket = self.socket or settings.control_socket
            self.db = self.db or settings.db_path
            self.store = self.store or settings.dock.store_dir

    def need_socket(self) -> Path:
        if self.socket is None:
            raise UsageError("no control socket: pass --config or --socket")
        return self.socket

    def need_db(self) -> Path:
        if self.db is None:
            raise UsageError("no state database: pass --config or --db")
        return self.db


def emit_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    sys.stdout.write("\n")


def rfc3339(us: int | float | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # RFC 3339


def open_db(paths: Paths) -> Any:
    from agent.store.db import DatabaseError, open_readonly

    try:
        return open_readonly(paths.need_db())
    except DatabaseError as exc:
        raise Unreachable(str(exc)) from exc
