"""Offload throughput against `cp -r` + `sync` of the same files on the same filesystem.

    python -m bench.offload [--recorders N] [--files M] [--size-mib S] [--verify on|off]
                            [--workdir DIR] [--keep] --json

Footage comes from the simulator's deterministic generator (`hw_sim.footage`), written
by a child process so it neither warms this process nor inflates its peak RSS. The
agent run uses the real offload path: Offloader + Database + Ledger + evidence index,
with every recorder offloaded concurrently (default `max_concurrent`). Page caches are
dropped before each run when running as root (`drop_caches` in the JSON says whether).
Prints one JSON object; timings are facts to read, not pass/fail criteria.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

MIB = 1 << 20
_GENERATE = """
import sys
from pathlib import Path
from hw_sim.spec import FootageSpec, RecorderSpec
from hw_sim.storage import RecorderStorage
base, n, files, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    spec = RecorderSpec(serial=f"BENCH{i:03d}", storage_total_bytes=files * size + 1,
                        footage=FootageSpec(count=files, size_bytes=size, seed=7,
                                            start_ms=1_790_000_000_000))
    st = RecorderStorage(spec, base / spec.serial)
    st.materialise()
    print(st.root, flush=True)
"""


def _drop_caches() -> bool:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def _generate(base: Path, recorders: int, files: int, size: int) -> list[Path]:
    out = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(base), str(recorders), str(files), str(size)],
        check=True, capture_output=True, text=True,
    )
    return [Path(line) for line in out.stdout.splitlines() if line.strip()]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _agent_run(roots: list[Path], work: Path, verify: bool) -> dict[str, Any]:
    from agent.domain import DockingContext, RecorderIdentity
    from agent.offload import SCHEMA as JOURNAL_SCHEMA
    from agent.offload import Offloader
    from agent.settings import OffloadSettings
    from agent.store import evidence, ledger, outbox
    from agent.store.db import Database

    class _NoDeadline:
        def due(self, recorded_end_utc: Any, /) -> Any:
            return recorded_end_utc

    db = Database(work / "state" / "dock.sqlite3",
                  [outbox.SCHEMA, ledger.SCHEMA, evidence.SCHEMA, JOURNAL_SCHEMA])
    store = work / "store"
    store.mkdir()
    settings = replace(OffloadSettings(), verify="always" if verify else "off")
    offloader = Offloader(db, ledger.Ledger("bench-dock"), store, settings, _NoDeadline(),
                          ZoneInfo("UTC"))
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def ticker() -> None:
        period = 0.01
        while True:
            t = loop.time()
            await asyncio.sleep(period)
            lags.append(max(0.0, loop.time() - t - period) * 1000)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(1.0)  # idle baseline: what the machine alone does to the loop
    idle = list(lags)
    lags.clear()
    t0 = time.monotonic()
    summaries = await asyncio.gather(*(
        offloader.offload(
            DockingContext(uuid.uuid4().hex, f"bay-{i}",
                           RecorderIdentity(serial=root.parent.name, officer_no="B1",
                                            unit_no="BENCH"), first_docking=True),
            root,
        )
        for i, root in enumerate(roots)
    ))
    seconds = time.monotonic() - t0
    tick.cancel()
    await offloader.close()
    db.close()
    stored = sum(len(s.stored) for s in summaries)
    nbytes = sum(s.bytes_copied for s in summaries)
    return {
        "seconds": seconds, "bytes": nbytes, "files_stored": stored,
        "outcomes": sorted({s.outcome for s in summaries}),
        "loop_lag_p99_ms": round(_percentile(lags, 0.99), 2),
        "loop_lag_max_ms": round(max(lags, default=0.0), 2),
        "idle_loop_lag_p99_ms": round(_percentile(idle, 0.99), 2),
    }


def _cp_run(roots: list[Path], dest: Path) -> float:
    dest.mkdir()
    t0 = time.monotonic()
    for i, root in enumerate(roots):
        subprocess.run(["cp", "-r", str(root), str(dest / f"r{i}")], check=True)
    subprocess.run(["sync"], check=True)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recorders", type=int, default=1)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--verify", choices=["on", "off"], default="off")
    p.add_argument("--workdir", type=Path, default=None,
                   help="scratch directory on the filesystem to measure (default /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-offload-", dir=args.workdir or "/var/tmp"))
    try:
        roots = _generate(work / "recorders", args.recorders, args.files, args.size_mib * MIB)
        dropped = _drop_caches()
        agent = asyncio.run(_agent_run(roots, work / "agent", args.verify == "on"))
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dropped = _drop_caches() and dropped
        cp_seconds = _cp_run(roots, work / "cp")
        total = args.recorders * args.files * args.size_mib * MIB
        agent_mb_s = total / agent["seconds"] / 1e6
        cp_mb_s = total / cp_seconds / 1e6
        result = {
            "agent_mb_s": round(agent_mb_s, 1),
            "cp_sync_mb_s": round(cp_mb_s, 1),
            "ratio": round(agent_mb_s / cp_mb_s, 3),
            "loop_lag_p99_ms": agent["loop_lag_p99_ms"],
            "loop_lag_max_ms": agent["loop_lag_max_ms"],
            "idle_loop_lag_p99_ms": agent["idle_loop_lag_p99_ms"],
            "peak_rss_mb": round(peak_rss_mb, 1),
            "recorders": args.recorders, "files_per_recorder": args.files,
            "size_mib": args.size_mib, "total_bytes": total, "verify": args.verify,
            "agent_seconds": round(agent["seconds"], 3), "cp_sync_seconds": round(cp_seconds, 3),
            "agent_bytes_copied": agent["bytes"], "files_stored": agent["files_stored"],
            "outcomes": agent["outcomes"],
            "drop_caches": dropped if dropped else "not root: page caches not dropped",
            "loadavg_before": load_before, "cpus": os.cpu_count(),
        }
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
