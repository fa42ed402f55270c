"""Run the uploader (and retention) as its own process: `python -m agent.upload`.

The agent runs the same code in its own event loop; this entry point serves docks that
prefer a separate unit, and tools: `--once` drains the queue and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_settings
from agent.hold_scope import in_scope
from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner, load_or_create_key
from agent.upload import client_factory
from agent.upload.errors import UploadError
from agent.upload.retention import Retention
from agent.upload.uploader import Uploader


async def _main(config: Path, once: bool) -> int:
    settings = load_settings(config)
    if not settings.upload.enabled:
        print("upload is not enabled in the configuration", file=sys.stderr)
        return 2
    factory = client_factory(settings.upload)
    db = await asyncio.to_thread(Database, settings.db_path, ALL_SCHEMAS)
    ledger = Ledger(settings.dock.id, CheckpointSigner(load_or_create_key(settings.key_file)))
    up = Uploader(db, ledger, settings.dock.store_dir, settings.upload, settings.retention,
                  factory)
    ret = Retention(db, ledger, settings.dock.store_dir, settings.retention, factory, in_scope)
    try:
        if once:
            await ret.settle()
            await up.drain()
            await ret.pass_once()
            return 0
        async with asyncio.TaskGroup() as tg:
            tg.create_task(up.run())
            tg.create_task(ret.run())
    finally:
        up.close()
        db.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.upload", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    p.add_argument("--once", action="store_true", help="drain the queue once, then exit")
    args = p.parse_args(argv)
    try:
        return asyncio.run(_main(args.config, args.once))
    except (ConfigError, UploadError) as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
