"""A dock agent reduced to its reporter, run as a separate process (for kill -9 tests).

usage: python agent_proc.py DB_PATH SETTINGS_JSON
Prints "online <bdSeq>" once connected; runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agent.mqtt import SCHEMAS
from agent.mqtt.reporter import Reporter
from agent.settings import MqttSettings
from agent.store.db import Database


class Actions:
    async def assign_officer(self, serial: str, record: Any) -> dict[str, Any]:
        return {}

    async def set_hold(self, hold_id: str, reason: str, scope: Any) -> dict[str, Any]:
        return {}

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]:
        return {}

    async def run_verify(self, deep: bool) -> dict[str, Any]:
        return {}

    async def readiness_report(self) -> dict[str, Any]:
        return {}

    async def rebirth(self) -> None:
        return None


async def main() -> None:
    db = Database(Path(sys.argv[1]), SCHEMAS)
    raw = json.loads(sys.argv[2])
    for k in ("ca_file", "cert_file", "key_file"):
        raw[k] = Path(raw[k])
    settings = MqttSettings(**raw)
    reporter = Reporter(db, settings, "dock-A", Actions(), agent_version="proc")
    task = asyncio.create_task(reporter.run())
    while not reporter.connected:
        await asyncio.sleep(0.01)
    print("online", reporter.stats.bd_seq, flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
