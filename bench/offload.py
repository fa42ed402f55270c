"""Offload throughput against `cp -r` + `sync` of the same files on the same filesystem.

    python -m bench.offload [--recorders N] [--files M] [--size-mib S] [--verify on|off]
                            [--repeat R] [--workdir DIR] [--keep] --json

Footage comes from the simulator's deterministic generator (`hw_sim.footage`), written
by a child process so it neither warms this process nor inflates its peak RSS. The
agent run is the real docking path: dock-sim recorders on ptys, announced over the
simulator socket to `SimDeviceSource` and its `DeviceTracker` (allowlist, pairing,
debounce), one `DockingSession` per bay under the
`BaySupervisor` (authenticate, identify, clock, unlock over the firmware protocol), then
the Offloader with Database + Ledger + evidence index, all recorders at once (default
`max_concurrent`). The clock runs from the first plug until every session has released
its recorder. Page caches are dropped before each run when running as root (`drop_caches`
in the JSON says whether). Prints one JSON object; timings are facts to read, not
pass/fail criteria.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

MIB = 1 << 20
_GENERATE = """
import sys
from pathlib import Path
from bench.offload import bench_spec
from hw_sim.storage import RecorderStorage
base, n, files, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    spec = bench_spec(i, files, size)
    st = RecorderStorage(spec, base / spec.serial)
    st.materialise()
    print(st.root, flush=True)
"""


def bench_spec(i: int, files: int, size: int) -> Any:
    """The recorder of bay `i`; the same spec in the generator and the simulated dock."""
    from hw_sim.spec import FootageSpec, RecorderSpec

    return RecorderSpec(serial=f"BENCH{i:03d}", storage_total_bytes=files * size + 1,
                        footage=FootageSpec(count=files, size_bytes=size, seed=7,
                                            start_ms=1_790_000_000_000))


def _scenario(bays: list[str], files: int, size: int) -> str:
    """A dock-sim scenario plugging every bench recorder 1.5 s in (after an idle baseline)."""
    lines = [f"[dock]\nbays = {json.dumps(bays)}\n"]
    for i, bay in enumerate(bays):
        spec = bench_spec(i, files, size)
        lines.append(
            f'[[recorder]]\nserial = "{spec.serial}"\n'
            f"storage_total_bytes = {spec.storage_total_bytes}\n"
            f"footage = {{ count = {files}, size_bytes = {size}, seed = 7,"
            f" start_ms = {spec.footage.start_ms} }}\n"
        )
        lines.append(f'[[timeline]]\nat = 1.5\naction = "plug"\nbay = "{bay}"\n'
                     f'serial = "{spec.serial}"\n')
    return "\n".join(lines)


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


async def _agent_run(
    base: Path, recorders: int, files: int, size: int, work: Path, verify: bool,
    fdatasync_interval_s: float = 2.0,
) -> dict[str, Any]:
    from agent.compliance.deadlines import HoursDeadline
    from agent.devices.events import DeviceEvent
    from agent.devices.sim_source import SimDeviceSource
    from agent.mount.mounter import DirectoryMounter
    from agent.offload import Offloader
    from agent.schemas import ALL_SCHEMAS
    from agent.session.context import SessionDeps
    from agent.session.recorder_link import recorder_client_opener
    from agent.session.supervisor import BaySupervisor
    from agent.settings import (
        AllowedDevice,
        ClockSettings,
        DeviceSettings,
        OffloadSettings,
        RecorderSettings,
    )
    from agent.store.db import Database
    from agent.store.ledger import Ledger
    from hw_sim.recorder import DEFAULT_FLEET_SECRET
    from hw_sim.spec import SIM_USB_PID, SIM_USB_VID

    work.mkdir(parents=True)
    db = Database(work / "state" / "dock.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("bench-dock")
    store = work / "store"
    store.mkdir()
    offload = replace(OffloadSettings(), verify="always" if verify else "off",
                      fdatasync_interval_s=fdatasync_interval_s)
    offloader = Offloader(db, ledger, store, offload, HoursDeadline(24), ZoneInfo("UTC"))
    recorder = RecorderSettings()
    # The simulated recorders go through the real allowlist, pairing and debounce.
    devices = DeviceSettings(source="sim", storage_wait_s=120,
                             allow=[AllowedDevice(vid=SIM_USB_VID, pid=SIM_USB_PID)])
    deps = SessionDeps(
        db=db, ledger=ledger, mounter=DirectoryMounter(), offloader=offloader,
        devices=devices, recorder=recorder,
        clock=ClockSettings(assume_synchronised=True), offload=offload,
        fleet_secret=DEFAULT_FLEET_SECRET, dock_synchronised=lambda: True,
        open_link=recorder_client_opener(recorder),
    )
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def ticker() -> None:
        period = 0.01
        while True:
            t = loop.time()
            await asyncio.sleep(period)
            lags.append(max(0.0, loop.time() - t - period) * 1000)

    bays = [str(i) for i in range(recorders)]
    socket_path = work / "sim.sock"
    scenario = work / "scenario.toml"
    scenario.write_text(_scenario(bays, files, size))
    # The simulated dock is its own process, so this process's RSS and loop are the agent's.
    sim = subprocess.Popen(
        [sys.executable, "-m", "hw_sim.cli", "--socket", str(socket_path), "--scenario",
         str(scenario), "--workdir", str(base)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    results: list[dict[str, Any]] = []
    idle: list[float] = []
    first_event: list[float] = []
    try:
        async with asyncio.TaskGroup() as tg:
            supervisor = BaySupervisor(deps, tg)
            events: asyncio.Queue[DeviceEvent] = asyncio.Queue()

            async def dispatch() -> None:
                while True:
                    event = await events.get()
                    if not first_event:
                        first_event.append(time.monotonic())
                        idle.extend(lags)  # before the first plug: the machine alone
                        lags.clear()
                    await supervisor.handle(event)

            background = [tg.create_task(
                SimDeviceSource(devices, socket_path).run(events.put_nowait)),
                          tg.create_task(dispatch()), tg.create_task(ticker())]
            while True:  # done when every bay's session has released (or failed)
                snaps = supervisor.snapshot()
                if len(snaps) == recorders and all(
                        s.state in ("released", "failed") for s in snaps):
                    break
                if sim.poll() is not None:
                    raise RuntimeError(f"dock-sim exited: {sim.stderr.read().decode()[-2000:]}"
                                       if sim.stderr else "dock-sim exited")
                await asyncio.sleep(0.05)
            seconds = time.monotonic() - first_event[0]
            for snap in snaps:
                result: dict[str, Any] = {"state": snap.state}
                if snap.offload_result is not None:
                    result.update(snap.offload_result.as_record())
                results.append(result)
            sim.terminate()  # unplugs every recorder; the sessions record their undocking
            while supervisor.snapshot():
                await asyncio.sleep(0.05)
            for task in background:
                task.cancel()
    finally:
        if sim.poll() is None:
            sim.kill()
        sim.wait()
    await offloader.close()
    db.close()
    return {
        "seconds": seconds,
        "bytes": sum(int(r.get("bytes_copied", 0)) for r in results),
        "files_stored": sum(int(r.get("stored", 0)) for r in results),
        "outcomes": sorted({str(r.get("outcome", r["state"])) for r in results}),
        "lags_ms": lags,
        "idle_lags_ms": idle,
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
    p.add_argument("--repeat", type=int, default=3,
                   help="alternate agent and cp runs this many times; medians are reported")
    p.add_argument("--workdir", type=Path, default=None,
                   help="scratch directory on the filesystem to measure (default /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--fdatasync-interval-s", type=float, default=2.0,
                   help="time-based durable points (offload.fdatasync_interval_s); each"
                   " repeat also runs with size-based points only, to show their cost")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-offload-", dir=args.workdir or "/var/tmp"))
    total = args.recorders * args.files * args.size_mib * MIB
    try:
        roots = _generate(work / "recorders", args.recorders, args.files, args.size_mib * MIB)
        agent_s: list[float] = []
        size_only_s: list[float] = []
        cp_s: list[float] = []
        lags: list[float] = []
        idle: list[float] = []
        dropped = True
        runs: list[dict[str, Any]] = []
        # Alternating runs, each from a cold page cache: a shared VM disk drifts a lot
        # between minutes, and alternation spreads that drift over both sides evenly.
        for r in range(max(1, args.repeat)):
            dropped = _drop_caches() and dropped
            agent = asyncio.run(_agent_run(work / "recorders", args.recorders, args.files,
                                           args.size_mib * MIB, work / f"agent{r}",
                                           args.verify == "on", args.fdatasync_interval_s))
            shutil.rmtree(work / f"agent{r}", ignore_errors=True)
            dropped = _drop_caches() and dropped
            size_only = asyncio.run(_agent_run(
                work / "recorders", args.recorders, args.files, args.size_mib * MIB,
                work / f"size-only{r}", args.verify == "on", 600.0))
            shutil.rmtree(work / f"size-only{r}", ignore_errors=True)
            size_only_s.append(size_only["seconds"])
            dropped = _drop_caches() and dropped
            cp_seconds = _cp_run(roots, work / f"cp{r}")
            shutil.rmtree(work / f"cp{r}", ignore_errors=True)
            agent_s.append(agent["seconds"])
            cp_s.append(cp_seconds)
            lags += agent["lags_ms"]
            idle += agent["idle_lags_ms"]
            runs.append({"agent_seconds": round(agent["seconds"], 3),
                         "cp_sync_seconds": round(cp_seconds, 3),
                         "files_stored": agent["files_stored"],
                         "bytes_copied": agent["bytes"], "outcomes": agent["outcomes"]})
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        agent_mb_s = total / statistics.median(agent_s) / 1e6
        cp_mb_s = total / statistics.median(cp_s) / 1e6
        size_only_mb_s = total / statistics.median(size_only_s) / 1e6
        result = {
            "agent_mb_s": round(agent_mb_s, 1),
            "cp_sync_mb_s": round(cp_mb_s, 1),
            "ratio": round(agent_mb_s / cp_mb_s, 3),
            "loop_lag_p99_ms": round(_percentile(lags, 0.99), 2),
            "loop_lag_max_ms": round(max(lags, default=0.0), 2),
            "idle_loop_lag_p99_ms": round(_percentile(idle, 0.99), 2),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "recorders": args.recorders, "files_per_recorder": args.files,
            "size_mib": args.size_mib, "total_bytes": total, "verify": args.verify,
            "repeat": len(runs), "runs": runs,
            "drop_caches": dropped if dropped else "not root: page caches not dropped",
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
            # time-based durable points: agent_mb_s is with them, this without (their cost)
            "fdatasync_interval_s": args.fdatasync_interval_s,
            "size_only_durable_points_mb_s": round(size_only_mb_s, 1),
            "durable_points_cost": round(1 - agent_mb_s / size_only_mb_s, 3),
        }
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
