"""Firmware transfer time of one image over the simulated recorder link.

    python -m bench.firmware [--size-mib 64] [--link-bytes-per-s 1000000] [--json]

A dock-sim recorder on a pty (its link throttled like a real CDC-ACM link), the firmware
bridge's RecorderClient, and the agent's own updater (`agent.firmware.updater.run_update`)
with its SQLite records: begin, chunks from offset 0, commit, reboot. `transfer_s` runs
from begin to the last chunk's reply, `commit_s` covers the recorder's whole-image check.
Prints one JSON object; timings are facts to read, not pass/fail criteria.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20


async def measure(size: int, link_bps: int, work: Path) -> dict[str, Any]:
    from agent.firmware.records import UpdateRecords, Who
    from agent.firmware.staging import record_staged, verify_and_copy
    from agent.firmware.updater import Progress, UpdateJob, run_update
    from agent.schemas import ALL_SCHEMAS
    from agent.store.db import Database
    from agent.store.ledger import Ledger
    from firmware_bridge.client import RecorderClient
    from firmware_bridge.fwpackage import build_package, keyring
    from hw_sim.dock import VirtualDock
    from hw_sim.fwkeys import sim_vendor_key
    from hw_sim.recorder import DEFAULT_FLEET_SECRET
    from hw_sim.spec import RecorderSpec

    key = sim_vendor_key()
    src = work / "bench.dfw"
    src.write_bytes(build_package(
        bytes(range(256)) * (size // 256) + bytes(size % 256), vendor="SimVendor",
        models=["DSJ-SIM1"], version="9.0.0", min_from=None, max_from=None, private_key=key,
        created="2026-11-01T00:00:00Z"))
    verified = verify_and_copy(src, work / "firmware", keyring([key.public_key()]), frozenset())
    db = Database(work / "bench.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("bench-dock")
    staged, _ = await db.write(lambda c: record_staged(c, ledger, verified, "bench"))
    dock = VirtualDock(1, None, workdir=work / "recorders")
    try:
        rec = await dock.plug("1", RecorderSpec("BENCHFW1", link_bytes_per_s=link_bps,
                                                boot_delay_s=0.5))
        assert rec.tty_path is not None
        client = await RecorderClient.open(rec.tty_path)
        await client.hello()
        await client.authenticate(DEFAULT_FLEET_SECRET)
        marks: dict[str, float] = {}

        def on_progress(p: Progress) -> None:
            if p.bytes_sent >= p.size and "sent" not in marks:
                marks["sent"] = time.monotonic()

        job = UpdateJob(client, Who("BENCHFW1", "1", "bench", None), "1.0.0", staged,
                        work / "firmware" / staged.file, None, 30.0)
        t0 = time.monotonic()
        await run_update(job, UpdateRecords(db, ledger), on_progress)
        t1 = time.monotonic()
        await client.close()
    finally:
        await dock.stop()
        db.close()
    transfer = marks.get("sent", t1) - t0
    return {"bench": "firmware", "size_bytes": size, "link_bytes_per_s": link_bps,
            "transfer_s": round(transfer, 2), "commit_s": round(t1 - marks.get("sent", t1), 2),
            "total_s": round(t1 - t0, 2), "rate_bytes_per_s": round(size / transfer)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=float, default=64.0)
    ap.add_argument("--link-bytes-per-s", type=int, default=1_000_000)
    ap.add_argument("--json", action="store_true", help="(the output is always JSON)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        result = asyncio.run(measure(int(args.size_mib * MIB), args.link_bytes_per_s,
                                     Path(tmp)))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
