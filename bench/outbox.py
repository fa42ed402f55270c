"""Outbox drain benchmark: events/s drained to a local mosquitto at QoS 1 (acknowledged),
and the replay time of a large backlog.

    python -m bench.outbox --json [--events 20000] [--backlog 100000] [--broker HOST:PORT]

Without --broker a private mosquitto (plain TCP on 127.0.0.1) is started for the run.
Prints one JSON object (with --json) including `events_per_s` and `backlog_replay_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.mqtt import SCHEMAS
from agent.mqtt.reporter import Reporter
from agent.settings import MqttSettings
from agent.store import outbox
from agent.store.db import Database
from tests.mqtt.no_actions import NoActions  # the bench sends no commands

MOSQUITTO = "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_broker(workdir: Path, *, tcp_nodelay: bool = False
                  ) -> tuple[subprocess.Popen[bytes], int]:
    """A private mosquitto; `tcp_nodelay` sends to subscribers at once (no Nagle)."""
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_inflight_messages 1000\nuser root\n"
                    + ("set_tcp_nodelay true\n" if tcp_nodelay else ""))
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def _custody(i: int) -> dict[str, object]:
    return {"seq": i, "hash": f"{i:064x}", "kind": "file-stored", "time": "2026-11-23T10:00:00Z",
            "dock_id": "bench", "recorder": "REC00001", "officer": "0042", "bay": "1",
            "data": {"path": f"DCIM/100/{i:08d}.MP4", "size": 123456789}}


def _fill(conn: sqlite3.Connection, start: int, n: int) -> None:
    for i in range(start, start + n):
        outbox.enqueue(conn, stream="custody", subject="REC00001", payload=_custody(i))


def _depth(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def _wait_empty(db: Database, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while await db.read(_depth):
        if time.monotonic() > deadline:
            raise SystemExit("outbox did not drain in time")
        await asyncio.sleep(0.01)


async def _measure(settings: MqttSettings, events: int, backlog: int, workdir: Path
                   ) -> dict[str, Any]:
    result: dict[str, Any] = {"events": events, "backlog_events": backlog}
    # 1. live stream: produce in batches of 500 while the reporter drains
    db = Database(workdir / "live.sqlite3", SCHEMAS)
    reporter = Reporter(db, settings, "bench", NoActions(), agent_version="bench")
    task = asyncio.create_task(reporter.run())
    while not reporter.connected:
        await asyncio.sleep(0.01)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, events, 500):
        n = min(500, events - start)
        await db.write(functools.partial(_fill, start=start, n=n))
        reporter.notify_outbox()
    await _wait_empty(db, 600)
    elapsed = time.perf_counter() - t0
    result["events_per_s"] = round(events / elapsed, 1)
    result["live_elapsed_s"] = round(elapsed, 3)
    # CPU seconds of this process (loop + SQLite thread, producer included): the wall-clock
    # figures depend on what else runs on the box; these do much less.
    result["live_cpu_s"] = round(time.process_time() - c0, 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    db.close()
    # 2. backlog replay: the outbox already holds `backlog` events when the reporter starts
    db = Database(workdir / "backlog.sqlite3", SCHEMAS)
    t_fill = time.perf_counter()
    for start in range(0, backlog, 10_000):
        n = min(10_000, backlog - start)
        await db.write(functools.partial(_fill, start=start, n=n))
    result["backlog_fill_s"] = round(time.perf_counter() - t_fill, 3)
    reporter = Reporter(db, settings, "bench", NoActions(), agent_version="bench")
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(reporter.run())
    await _wait_empty(db, 1800)
    result["backlog_cpu_s"] = round(time.process_time() - c0, 3)
    replay = time.perf_counter() - t0
    result["backlog_replay_s"] = round(replay, 3)
    result["backlog_events_per_s"] = round(backlog / replay, 1)
    result["acked"] = reporter.stats.acked
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    db.close()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--broker", help="HOST:PORT of a broker to use (plain TCP)")
    ap.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    proc = None
    try:
        if args.broker:
            host, _, port_s = args.broker.rpartition(":")
            port = int(port_s)
        else:
            proc, port = _start_broker(workdir)
            host = "127.0.0.1"
        settings = replace(MqttSettings(), host=host, port=port, tls=False,
                           protocol=args.protocol, client_id="bench-dock")
        result = asyncio.run(_measure(settings, args.events, args.backlog, workdir))
        result.update(protocol=args.protocol, qos=1, tls=False, cpus=os.cpu_count(),
                      loadavg_1m=round(os.getloadavg()[0], 2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for k, v in sorted(result.items()):
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
