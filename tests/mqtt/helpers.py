"""Small helpers shared by the MQTT tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from agent.mqtt.reporter import Reporter
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database


async def until(pred: Callable[[], bool], timeout: float = 90.0) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


@asynccontextmanager
async def running(reporter: Reporter, *, wait_connected: bool = True) -> AsyncIterator[Reporter]:
    task = asyncio.create_task(reporter.run())
    try:
        if wait_connected:
            await until(lambda: reporter.connected or task.done())
            if task.done():
                task.result()
        yield reporter
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def make_reporter(db: Database, settings: MqttSettings, actions: Any, dock_id: str = "dock-A",
                  **kw: Any) -> Reporter:
    return Reporter(db, settings, dock_id, actions, agent_version="0.1.0-test", **kw)


async def add_custody(db: Database, n: int, start: int = 0, serial: str = "REC00001") -> None:
    def fn(conn: Any) -> None:
        for i in range(start, start + n):
            outbox.enqueue(conn, stream="custody", subject=serial, payload={
                "seq": i + 1, "hash": f"{i:064x}", "kind": "file-stored",
                "time": "2026-11-23T10:00:00Z", "dock_id": "dock-A", "recorder": serial,
                "officer": "0042", "bay": "1", "data": {"n": i}})

    await db.write(fn)


def outbox_depth(db: Database) -> int:
    return db.read_sync(lambda c: outbox.stats(c).depth)
