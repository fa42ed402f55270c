"""A dock agent reduced to its reporter, run as a separate process (for kill -9 tests).

usage (from the repository root): python -m tests.mqtt.agent_proc DB_PATH SETTINGS_JSON
Prints "online <bdSeq>" once connected; runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from agent.mqtt import SCHEMAS
from agent.mqtt.reporter import Reporter
from agent.settings import MqttSettings
from agent.store.db import Database
from tests.mqtt.no_actions import NoActions


async def main() -> None:
    db = Database(Path(sys.argv[1]), SCHEMAS)
    raw = json.loads(sys.argv[2])
    for k in ("ca_file", "cert_file", "key_file"):
        raw[k] = Path(raw[k])
    settings = MqttSettings(**raw)
    reporter = Reporter(db, settings, "dock-A", NoActions(), agent_version="proc")
    task = asyncio.create_task(reporter.run())
    while not reporter.connected:
        await asyncio.sleep(0.01)
    print("online", reporter.stats.bd_seq, flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
