"""Offload throughput against the disk's own limits, on the same files and filesystem.

    python -m bench.offload [--recorders N] [--files M] [--size-mib S | --size-kib K]
                            [--verify on|off|both] [--recorder-rate-mb-s R] [--repeat R]
                            [--workdir DIR] [--source-dir DIR] [--keep] --json

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

Baselines of the same round, same files: `cp -r` + `sync`; `dd bs=16M` with direct I/O on
both sides, file after file (`dd_direct_mb_s`); the store's raw direct-write limit, the
same byte count from /dev/zero with `oflag=direct` (`write_limit_mb_s`); a copy's own limit on
these devices, every footage file read with direct I/O while that byte count is written at
once (`read_write_limit_mb_s`: with the footage on the store's disk, reads and writes share
it). CPU: the agent
process's user+sys seconds per GiB over the offload (`cpu_s_per_gib`) against `b3sum` +
`cp` of the same files (`cpu_ratio`; null without `b3sum`). `fairness` is the slowest
bay's rate over the fastest's (each bay: bytes / time from the first plug to its release).

The aggregate against its goal: `aggregate_goal_mb_s` is min(recorders x recorder rate,
the single-stream `dd_direct_mb_s` of the same rounds), whichever is measured, and
`ratio_goal` the agent's rate over it; `steady_mb_s` is the rate between the first and the
last MiB this process wrote (`steady_seconds`; `steady_ratio_goal` over the goal), which
leaves out the start-up of every session and the slowest bay's tail.

`--recorder-rate-mb-s R` holds every recorder to R MB/s (a USB 2.0 link): by default in the
kernel (each recorder's footage in its own loop-mounted image, throttled by the block layer;
`recorder_throttle` is "kernel"), else by the simulator's FUSE view, in Python ("fuse"),
which with 25 recorders on 2 cores costs more CPU than the agent and caps the aggregate.

`--verify both` adds, in every round, an agent run with `verify = "always"` on the same
files (`verify_on_mb_s`; `verify_ratio` is it over the verify-off `agent_mb_s` of the same
rounds). `--source-dir` puts the recorders' footage on another filesystem (a dock reads
recorders over USB, not from its evidence disk; e.g. /dev/shm): with the footage on the
store's own disk, every copy's reads share that disk's bandwidth with its writes.

Memory: `peak_rss_mb` is this process's peak RSS over the agent runs of the first round
(this process is the agent: database, ledger, sessions and offloader; the dock and the
footage generator are children). `peak_rss_breakdown` splits the largest sample of it (taken
every 0.2 s) into anonymous memory (Python objects, malloc), file-backed pages (code and
shared libraries) and shared anonymous memory (the copy buffers). The agent gets the fleet
secret from a file, as in production, so the simulator's modules are not loaded into it.
The two memory cases of issue 18, one agent run each:

    python -m bench.offload --recorders 25 --files 2 --size-mib 64 --recorder-rate-mb-s 35 \
        --max-concurrent 25 --agent-only --single-run --repeat 1 --json
    python -m bench.offload --recorders 1 --files 20000 --size-kib 4 \
        --agent-only --single-run --repeat 1 --json
"""

from __future__ import annotations

import argparse
import array
import asyncio
import concurrent.futures
import contextlib
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

MIB = 1 << 20
_GENERATE = """
import sys
from pathlib import Path
from bench.offload import bench_spec
from hw_sim.blockvolume import BlockVolume
from hw_sim.storage import RecorderStorage
base, n, files, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
in_images = sys.argv[5] == "kernel"
for i in range(n):
    spec = bench_spec(i, files, size)
    st = RecorderStorage(spec, base / spec.serial)
    if in_images:  # where the dock's recorders will keep it: an image per recorder
        st.use_volume(BlockVolume(st.dir, 0))
    st.materialise()
    st.release()
    print(st.root, flush=True)
"""


def bench_spec(i: int, files: int, size: int) -> Any:
    """The recorder of bay `i`; the same spec in the generator and the simulated dock."""
    from hw_sim.spec import FootageSpec, RecorderSpec

    return RecorderSpec(serial=f"BENCH{i:03d}", storage_total_bytes=files * size + 1,
                        footage=FootageSpec(count=files, size_bytes=size, seed=7,
                                            start_ms=1_790_000_000_000))


@dataclass(frozen=True, slots=True)
class Case:
    """What one bench invocation measures."""

    recorders: int
    files: int
    size: int  # bytes per file
    verify: bool
    interval_s: float  # offload.fdatasync_interval_s
    rate_mb_s: float | None = None  # each recorder's read rate (None: as fast as the disk)
    baselines: bool = True  # also cp, dd and the write limit (off: the agent alone)
    max_concurrent: int | None = None  # offload.max_concurrent (None: the default)
    verify_both: bool = False  # also an agent run with verify on, in every round
    size_only: bool = True  # also the run with size-based durable points only (their cost)
    # who holds that rate: "kernel" (the footage is in a loop-mounted image per recorder,
    # throttled by the block layer) or "fuse" (the simulator's FUSE view paces each read)
    throttle: str = "fuse"

    @property
    def total(self) -> int:
        return self.recorders * self.files * self.size


def _scenario(bays: list[str], case: Case) -> str:
    """A dock-sim scenario plugging every bench recorder 1.5 s in (after an idle baseline)."""
    lines = [f"[dock]\nbays = {json.dumps(bays)}\n"]
    faults = ("" if case.rate_mb_s is None
              else f"faults = {{ read_rate_mb_s = {case.rate_mb_s},"
                   f" read_rate_by = \"{case.throttle}\" }}\n")
    for i, bay in enumerate(bays):
        spec = bench_spec(i, case.files, case.size)
        lines.append(
            f'[[recorder]]\nserial = "{spec.serial}"\n'
            f"storage_total_bytes = {spec.storage_total_bytes}\n"
            f"footage = {{ count = {case.files}, size_bytes = {case.size}, seed = 7,"
            f" start_ms = {spec.footage.start_ms} }}\n{faults}"
        )
        lines.append(f'[[timeline]]\nat = 1.5\naction = "plug"\nbay = "{bay}"\n'
                     f'serial = "{spec.serial}"\n')
    return "\n".join(lines)


def _drop_caches() -> bool:
    if os.environ.get("BENCH_KEEP_CACHES"):  # the smoke test: leave the machine's caches
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def generate(base: Path, case: Case) -> list[Path]:
    out = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(base), str(case.recorders), str(case.files),
         str(case.size), case.throttle if case.rate_mb_s is not None else "none"],
        check=True, capture_output=True, text=True,
    )
    return [Path(line) for line in out.stdout.splitlines() if line.strip()]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class _LagProbe:
    """Event-loop lag: how late a 10 ms sleep wakes up, split at the first plug."""

    def __init__(self) -> None:
        # plain doubles: a long run takes tens of thousands of samples, and this process's
        # RSS is the agent's measurement
        self.lags = array.array("d")
        self.idle = array.array("d")

    def plugged(self) -> None:
        self.idle.extend(self.lags)  # before the first plug: the machine alone
        del self.lags[:]

    async def run(self) -> None:
        loop, period = asyncio.get_running_loop(), 0.01
        while True:
            t = loop.time()
            await asyncio.sleep(period)
            self.lags.append(max(0.0, loop.time() - t - period) * 1000)


def _bytes_written() -> int:
    """Bytes this process has handed to write calls so far (`wchar` of /proc/self/io):
    the store writes, O_DIRECT ones included; the database's are a rounding error."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "wchar":
                    return int(rest)
    except OSError:
        pass
    return 0


class _MovedProbe:
    """When bytes moved: samples of the bytes written since the first plug, so the
    aggregate can be read between the first and the last byte moved (`steady_mb_s`),
    without the start-up of every session and the tail of the slowest."""

    PERIOD_S = 0.05

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._base: int | None = None

    def plugged(self) -> None:
        self._base = _bytes_written()

    async def run(self) -> None:
        while True:
            if self._base is not None:
                self.samples.append((time.monotonic(), _bytes_written() - self._base))
            await asyncio.sleep(self.PERIOD_S)

    def steady(self) -> tuple[float, int] | None:
        """(seconds, bytes) from the last sample before the first MiB was written to the
        first sample within a MiB of the final count (the sessions' own database writes at
        either end stay outside); None when too little was written to tell."""
        if not self.samples or self.samples[-1][1] <= 2 * MIB:
            return None
        final = self.samples[-1][1]
        first = max((i for i, (_, n) in enumerate(self.samples) if n < MIB), default=0)
        last = next(i for i, (_, n) in enumerate(self.samples) if n >= final - MIB)
        (t0, n0), (t1, n1) = self.samples[first], self.samples[last]
        return (t1 - t0, n1 - n0) if t1 > t0 else None


_STATUS_KEYS = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb",
                "RssShmem": "shmem_mb"}


def rss_sample() -> dict[str, float]:
    """This process's resident memory now, by kind (MB), from /proc/self/status."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in _STATUS_KEYS:
                    out[_STATUS_KEYS[key]] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        return {}
    return out


class _RssProbe:
    """The largest resident-memory sample of one agent run, by kind."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            now = rss_sample()
            if now.get("rss_mb", 0.0) > self.peak.get("rss_mb", -1.0):
                self.peak = now
            await asyncio.sleep(0.2)


def _agent_deps(work: Path, case: Case) -> tuple[Any, Any, Any]:
    """(database, offloader, session deps) of one agent run: the production classes."""
    from agent.compliance.deadlines import HoursDeadline
    from agent.mount.mounter import DirectoryMounter
    from agent.offload import Offloader
    from agent.schemas import ALL_SCHEMAS
    from agent.session.context import SessionDeps
    from agent.session.recorder_link import recorder_client_opener
    from agent.settings import (
        AllowedDevice,
        ClockSettings,
        DeviceSettings,
        OffloadSettings,
        RecorderSettings,
    )
    from agent.store.db import Database
    from agent.store.ledger import Ledger
    from hw_sim.spec import SIM_USB_PID, SIM_USB_VID

    work.mkdir(parents=True)
    (work / "fleet.secret").write_bytes(secrets.token_hex(32).encode())
    db = Database(work / "state" / "dock.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("bench-dock")
    store = work / "store"
    store.mkdir()
    offload = replace(OffloadSettings(), verify="always" if case.verify else "off",
                      fdatasync_interval_s=case.interval_s)
    if case.max_concurrent is not None:
        offload = replace(offload, max_concurrent=case.max_concurrent)
    offloader = Offloader(db, ledger, store, offload, HoursDeadline(24), ZoneInfo("UTC"))
    recorder = RecorderSettings()
    # The simulated recorders go through the real allowlist, pairing and debounce.
    devices = DeviceSettings(source="sim", storage_wait_s=120,
                             allow=[AllowedDevice(vid=SIM_USB_VID, pid=SIM_USB_PID)])
    deps = SessionDeps(
        db=db, ledger=ledger, mounter=DirectoryMounter(), offloader=offloader,
        devices=devices, recorder=recorder,
        clock=ClockSettings(assume_synchronised=True), offload=offload,
        fleet_secret=(work / "fleet.secret").read_bytes(), dock_synchronised=lambda: True,
        open_link=recorder_client_opener(recorder),
    )
    return db, offloader, deps


def _start_sim(base: Path, work: Path, case: Case) -> tuple[subprocess.Popen[bytes], Path]:
    """The simulated dock is its own process, so this process's RSS and loop are the agent's."""
    socket_path = work / "sim.sock"
    scenario = work / "scenario.toml"
    scenario.write_text(_scenario([str(i) for i in range(case.recorders)], case))
    sim = subprocess.Popen(
        [sys.executable, "-m", "hw_sim.cli", "--socket", str(socket_path), "--scenario",
         str(scenario), "--workdir", str(base), "--secret-file", str(work / "fleet.secret")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return sim, socket_path


async def _until_released(supervisor: Any, recorders: int, sim: subprocess.Popen[bytes],
                          released: dict[str, float]) -> list[Any]:
    """Wait until every bay's session has released (or failed); note when each did."""
    while True:
        snaps = supervisor.snapshot()
        for snap in snaps:
            if snap.state in ("released", "failed"):
                released.setdefault(snap.bay, time.monotonic())
        if len(snaps) == recorders and len(released) >= recorders:
            return list(snaps)
        if sim.poll() is not None:
            err = sim.stderr.read().decode()[-2000:] if sim.stderr else ""
            raise RuntimeError(f"dock-sim exited: {err}")
        await asyncio.sleep(0.05)


async def agent_run(base: Path, work: Path, case: Case) -> dict[str, Any]:
    from agent.devices.events import DeviceEvent
    from agent.devices.sim_source import SimDeviceSource
    from agent.session.supervisor import BaySupervisor

    db, offloader, deps = _agent_deps(work, case)
    probe, rss, moved = _LagProbe(), _RssProbe(), _MovedProbe()
    first: list[float] = []
    released: dict[str, float] = {}
    sim, socket_path = _start_sim(base, work, case)
    cpu0 = _cpu_self()
    try:
        async with asyncio.TaskGroup() as tg:
            supervisor = BaySupervisor(deps, tg)
            events: asyncio.Queue[DeviceEvent] = asyncio.Queue()

            async def dispatch() -> None:
                while True:
                    event = await events.get()
                    if not first:
                        first.append(time.monotonic())
                        probe.plugged()
                        moved.plugged()
                    await supervisor.handle(event)

            background = [tg.create_task(
                SimDeviceSource(deps.devices, socket_path).run(events.put_nowait)),
                          tg.create_task(dispatch()), tg.create_task(probe.run()),
                          tg.create_task(rss.run()), tg.create_task(moved.run())]
            snaps = await _until_released(supervisor, case.recorders, sim, released)
            seconds, cpu = time.monotonic() - first[0], _cpu_self() - cpu0
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
    results = [{"state": s.state, "bay": s.bay,
                **(s.offload_result.as_record() if s.offload_result is not None else {})}
               for s in snaps]
    rates = [int(r.get("bytes_copied", 0)) / max(1e-9, released[r["bay"]] - first[0])
             for r in results if r["bay"] in released]
    return {"seconds": seconds, "cpu_s": cpu,
            "bytes": sum(int(r.get("bytes_copied", 0)) for r in results),
            "files_stored": sum(int(r.get("stored", 0)) for r in results),
            "outcomes": sorted({str(r.get("outcome", r["state"])) for r in results}),
            "lags_ms": probe.lags, "idle_lags_ms": probe.idle, "bay_rates": rates,
            "rss_peak": rss.peak, "steady": moved.steady()}


def _generate(base: Path, recorders: int, files: int, size: int) -> list[Path]:
    """`generate` with the signature `bench.upload` calls."""
    return generate(base, Case(recorders, files, size, False, 2.0))


async def _agent_run(base: Path, recorders: int, files: int, size: int, work: Path,
                     verify: bool, fdatasync_interval_s: float = 2.0) -> dict[str, Any]:
    """`agent_run` with the signature `bench.upload` calls."""
    return await agent_run(base, work, Case(recorders, files, size, verify,
                                            fdatasync_interval_s))


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(cmds: list[list[str]]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of running `cmds` one after the other, then `sync`."""
    t0, c0 = time.monotonic(), _cpu_children()
    for cmd in [*cmds, ["sync"]]:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0, _cpu_children() - c0


def _files(roots: list[Path]) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def _cp_run(roots: list[Path], dest: Path) -> tuple[float, float]:
    dest.mkdir()
    return _timed([["cp", "-r", str(root), str(dest / f"r{i}")] for i, root in enumerate(roots)])


def _dd_direct_run(roots: list[Path], dest: Path) -> float:
    """The same files through `dd` with 16 MiB direct I/O on both sides, one after another."""
    dest.mkdir()
    return _timed([["dd", f"if={src}", f"of={dest / f'f{i}'}", "bs=16M", "iflag=direct",
                    "oflag=direct", "status=none"] for i, src in enumerate(_files(roots))])[0]


def _write_limit_run(dest: Path, total: int) -> float:
    """The store's raw direct-write limit: the same number of bytes, `oflag=direct`."""
    dest.mkdir()
    count = max(1, -(-total // (16 * MIB)))
    return _timed([["dd", "if=/dev/zero", f"of={dest / 'zero'}", "bs=16M", f"count={count}",
                    "oflag=direct", "conv=fsync", "status=none"]])[0]


def _read_write_limit_run(roots: list[Path], dest: Path, total: int) -> float:
    """A copy's own limit on these devices: every footage file read with direct I/O (to
    /dev/null) while the same byte count is written to the store with `oflag=direct`, at
    once. Where the footage shares the store's disk, reads and writes share its bandwidth."""
    dest.mkdir()
    count = max(1, -(-total // (16 * MIB)))
    reads = [["dd", f"if={src}", "of=/dev/null", "bs=16M", "iflag=direct", "status=none"]
             for src in _files(roots)]
    write = [["dd", "if=/dev/zero", f"of={dest / 'zero'}", "bs=16M", f"count={count}",
              "oflag=direct", "conv=fsync", "status=none"]]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(_timed, reads), pool.submit(_timed, write)]:
            done.result()
    return time.monotonic() - t0


def _b3sum_cpu(roots: list[Path]) -> float | None:
    """CPU seconds of `b3sum` over the same files (None when b3sum is not installed)."""
    if shutil.which("b3sum") is None:
        return None
    files = [str(f) for f in _files(roots)]
    return sum(_timed([["b3sum", "--no-mmap", *files[i:i + 500]]])[1]
               for i in range(0, len(files), 500))


def _one_round(work: Path, roots: list[Path], case: Case, r: int,
               recorders: Path | None = None) -> dict[str, Any]:
    """Agent (both durable-point modes), cp + sync, dd direct and the write limit, each from
    a cold page cache, in the same order every round."""
    out: dict[str, Any] = {}
    runs = [("agent", case), ("size_only", replace(case, interval_s=600.0))]
    if not case.size_only:
        runs.pop()
    if case.verify_both:
        runs.append(("verify_on", replace(case, verify=True)))
    for key, c in runs:
        out["dropped"] = _drop_caches()
        out[key] = asyncio.run(agent_run(recorders or work / "recorders", work / f"{key}{r}",
                                         c))
        shutil.rmtree(work / f"{key}{r}", ignore_errors=True)
    # the agent's peak: read before this process lists files for the baselines
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not case.baselines:
        return out
    with _footage_readable(case, roots):
        _baselines(work, roots, case, r, out)
    return out


@contextlib.contextmanager
def _footage_readable(case: Case, roots: list[Path]) -> Iterator[None]:
    """Footage in images (the kernel holds the recorders' rate) is readable only while
    its image is mounted: mount each, with no read limit, while the baselines read it."""
    if case.rate_mb_s is None or case.throttle != "kernel":
        yield
        return
    from hw_sim.blockvolume import BlockVolume

    volumes = [BlockVolume(root.parent, 0) for root in roots]
    try:
        for volume in volumes:
            volume.attach(0, 0)
        yield
    finally:
        for volume in volumes:
            volume.detach()


def _baselines(work: Path, roots: list[Path], case: Case, r: int, out: dict[str, Any]) -> None:
    for key, fn in (("cp", lambda d: _cp_run(roots, d)),
                    ("dd", lambda d: _dd_direct_run(roots, d)),
                    ("limit", lambda d: _write_limit_run(d, case.total)),
                    ("read_write", lambda d: _read_write_limit_run(roots, d, case.total))):
        out["dropped"] = _drop_caches() and out["dropped"]
        out[key] = fn(work / f"{key}{r}")
        shutil.rmtree(work / f"{key}{r}", ignore_errors=True)
    out["dropped"] = _drop_caches() and out["dropped"]
    out["b3sum_cpu"] = _b3sum_cpu(roots)


def _baseline_keys(case: Case, rounds: list[dict[str, Any]], agent_mb_s: float,
                   cpu_per_gib: float) -> dict[str, Any]:
    if not all("cp" in r for r in rounds):
        return dict.fromkeys(("cp_sync_mb_s", "ratio", "dd_direct_mb_s", "write_limit_mb_s",
                              "ratio_write_limit", "baseline_cpu_s_per_gib", "cpu_ratio",
                              "read_write_limit_mb_s", "ratio_read_write_limit"))

    def mb_s(seconds: list[float]) -> float:
        return case.total / statistics.median(seconds) / 1e6

    cp_mb_s, limit_mb_s = mb_s([r["cp"][0] for r in rounds]), mb_s([r["limit"] for r in rounds])
    rw_mb_s = mb_s([r["read_write"] for r in rounds])
    gib = case.total / (1 << 30)
    base = [r["cp"][1] + r["b3sum_cpu"] for r in rounds if r["b3sum_cpu"] is not None]
    base_per_gib = statistics.median(base) / gib if base else None
    return {
        "cp_sync_mb_s": round(cp_mb_s, 1), "ratio": round(agent_mb_s / cp_mb_s, 3),
        "dd_direct_mb_s": round(mb_s([r["dd"] for r in rounds]), 1),
        "write_limit_mb_s": round(limit_mb_s, 1),
        "ratio_write_limit": round(agent_mb_s / limit_mb_s, 3),
        "read_write_limit_mb_s": round(rw_mb_s, 1),
        "ratio_read_write_limit": round(agent_mb_s / rw_mb_s, 3),
        "baseline_cpu_s_per_gib": None if base_per_gib is None else round(base_per_gib, 3),
        "cpu_ratio": None if base_per_gib is None else round(cpu_per_gib / base_per_gib, 3),
    }


def _aggregate_keys(case: Case, agent: list[dict[str, Any]], agent_mb_s: float,
                    single_stream_mb_s: float | None) -> dict[str, Any]:
    """The aggregate against its goal, min(recorders x recorder rate, the single-stream
    disk limit `dd_direct_mb_s` of the same rounds), whichever of the two is known; and
    the steady-state rate between the first and the last MiB written (`steady_mb_s`), which
    leaves out the start-up of every session and the slowest bay's tail."""
    limits = [x for x in (case.recorders * case.rate_mb_s if case.rate_mb_s else None,
                          single_stream_mb_s) if x]
    goal = min(limits) if limits else None
    steady = [a["steady"] for a in agent if a.get("steady")]
    steady_mb_s = (statistics.median(n / t for t, n in steady) / 1e6) if steady else None
    return {
        "aggregate_goal_mb_s": None if goal is None else round(goal, 1),
        "ratio_goal": None if goal is None else round(agent_mb_s / goal, 3),
        "steady_mb_s": None if steady_mb_s is None else round(steady_mb_s, 1),
        "steady_seconds": (round(statistics.median(t for t, _ in steady), 3) if steady
                           else None),
        "steady_ratio_goal": (None if goal is None or steady_mb_s is None
                              else round(steady_mb_s / goal, 3)),
    }


def _summary(case: Case, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    agent = [r["agent"] for r in rounds]
    agent_mb_s = case.total / statistics.median(a["seconds"] for a in agent) / 1e6
    size_only_mb_s = (case.total / statistics.median(
        r["size_only"]["seconds"] for r in rounds) / 1e6) if case.size_only else None
    cpu_per_gib = statistics.median(a["cpu_s"] for a in agent) / (case.total / (1 << 30))
    lags = [x for a in agent for x in a["lags_ms"]]
    verify_on_mb_s = (case.total / statistics.median(r["verify_on"]["seconds"] for r in rounds)
                      / 1e6 if case.verify_both else None)
    rates = [min(a["bay_rates"]) / max(a["bay_rates"]) for a in agent if a["bay_rates"]]
    baselines = _baseline_keys(case, rounds, agent_mb_s, cpu_per_gib)
    return {
        "agent_mb_s": round(agent_mb_s, 1),
        **baselines,
        **_aggregate_keys(case, agent, agent_mb_s, baselines["dd_direct_mb_s"]),
        "cpu_s_per_gib": round(cpu_per_gib, 3),
        "verify_on_mb_s": None if verify_on_mb_s is None else round(verify_on_mb_s, 1),
        "verify_ratio": None if verify_on_mb_s is None else round(verify_on_mb_s / agent_mb_s,
                                                                  3),
        "loop_lag_p99_ms": round(_percentile(lags, 0.99), 2),
        "loop_lag_max_ms": round(max(lags, default=0.0), 2),
        "idle_loop_lag_p99_ms": round(_percentile(
            [x for a in agent for x in a["idle_lags_ms"]], 0.99), 2),
        "peak_rss_mb": round(rounds[0]["rss_mb"], 1),  # the agent's runs of round 1
        "peak_rss_breakdown": max((rounds[0][k]["rss_peak"] for k in ("agent", "size_only")
                                   if k in rounds[0]), key=lambda p: p.get("rss_mb", 0.0)),
        "fairness": round(min(rates), 3) if rates else None,
        "bay_mb_s_min_max": [round(min(a["bay_rates"]) / 1e6, 1) for a in agent[:1]]
        + [round(max(a["bay_rates"]) / 1e6, 1) for a in agent[:1]],
        "recorders": case.recorders, "files_per_recorder": case.files,
        "size_mib": round(case.size / MIB, 4), "total_bytes": case.total,
        "verify": "both" if case.verify_both else "on" if case.verify else "off",
        "recorder_rate_mb_s": case.rate_mb_s,
        "recorder_throttle": None if case.rate_mb_s is None else case.throttle,
        "max_concurrent": case.max_concurrent, "repeat": len(rounds),
        "runs": [{"agent_seconds": round(r["agent"]["seconds"], 3),
                  "cp_sync_seconds": round(r["cp"][0], 3) if "cp" in r else None,
                  "dd_direct_seconds": round(r["dd"], 3) if "dd" in r else None,
                  "write_limit_seconds": round(r["limit"], 3) if "limit" in r else None,
                  "read_write_limit_seconds": (round(r["read_write"], 3)
                                               if "read_write" in r else None),
                  "agent_cpu_s": round(r["agent"]["cpu_s"], 3),
                  "verify_on_seconds": (round(r["verify_on"]["seconds"], 3)
                                        if "verify_on" in r else None),
                  "files_stored": r["agent"]["files_stored"],
                  "bytes_copied": r["agent"]["bytes"], "outcomes": r["agent"]["outcomes"]}
                 for r in rounds],
        "drop_caches": (all(r["dropped"] for r in rounds)
                        or "not root: page caches not dropped"),
        "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
        # time-based durable points: agent_mb_s is with them, this without (their cost)
        "fdatasync_interval_s": case.interval_s,
        "size_only_durable_points_mb_s": (None if size_only_mb_s is None
                                          else round(size_only_mb_s, 1)),
        "durable_points_cost": (None if size_only_mb_s is None
                                else round(1 - agent_mb_s / size_only_mb_s, 3)),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--recorders", type=int, default=1)
    p.add_argument("--files", type=int, default=4)
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--size-kib", type=int, default=None,
                   help="file size in KiB (overrides --size-mib; for many small files)")
    p.add_argument("--verify", choices=["on", "off", "both"], default="off",
                   help="both: every round also runs the agent with verify on"
                   " (verify_on_mb_s, verify_ratio)")
    p.add_argument("--repeat", type=int, default=3,
                   help="alternate agent and baseline runs this many times; medians are reported")
    p.add_argument("--workdir", type=Path, default=None,
                   help="scratch directory on the filesystem to measure (default /var/tmp)")
    p.add_argument("--source-dir", type=Path, default=None,
                   help="put the recorders' footage here instead of the scratch directory"
                   " (another filesystem, as a dock's USB recorders are; e.g. /dev/shm)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--fdatasync-interval-s", type=float, default=2.0,
                   help="time-based durable points (offload.fdatasync_interval_s); each"
                   " repeat also runs with size-based points only, to show their cost")
    p.add_argument("--recorder-rate-mb-s", type=float, default=None,
                   help="each simulated recorder reads at most this fast (USB 2.0: ~35)")
    p.add_argument("--recorder-throttle", choices=["auto", "kernel", "fuse"], default="auto",
                   help="who holds --recorder-rate-mb-s: the block layer (each recorder's"
                   " footage in a throttled loop-mounted image; needs root), the simulator's"
                   " FUSE view (Python, costly with many recorders), or auto: the kernel"
                   " where it can (`recorder_throttle` in the JSON says which)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="offload.max_concurrent (default: the setting's default)")
    p.add_argument("--agent-only", action="store_true",
                   help="skip the cp/dd/write-limit/b3sum baselines (their keys are null)")
    p.add_argument("--single-run", action="store_true",
                   help="one agent run per round: skip the size-only durable-points run"
                   " (its keys are null); for the memory cases at scale")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    return p.parse_args(argv)


def _throttle(asked: str, rate_mb_s: float | None) -> str:
    """Who holds the recorders' read rate: "kernel" or "fuse" (SystemExit 2 when the kernel
    is asked for and cannot)."""
    if rate_mb_s is None or asked == "fuse":
        return "fuse"
    from hw_sim.blockvolume import kernel_throttle_unavailable

    why = kernel_throttle_unavailable()
    if why is None:
        return "kernel"
    if asked == "kernel":
        print(f"bench.offload: --recorder-throttle kernel: {why}", file=sys.stderr)
        raise SystemExit(2)
    return "fuse"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    size = args.size_kib * 1024 if args.size_kib is not None else args.size_mib * MIB
    case = Case(args.recorders, args.files, size, args.verify == "on",
                args.fdatasync_interval_s, args.recorder_rate_mb_s, not args.agent_only,
                args.max_concurrent, verify_both=args.verify == "both",
                size_only=not args.single_run,
                throttle=_throttle(args.recorder_throttle, args.recorder_rate_mb_s))
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-offload-", dir=args.workdir or "/var/tmp"))
    source = (work if args.source_dir is None
              else Path(tempfile.mkdtemp(prefix="bench-offload-src-", dir=args.source_dir)))
    try:
        roots = generate(source / "recorders", case)
        # Alternating runs, each from a cold page cache: a shared VM disk drifts a lot
        # between minutes, and alternation spreads that drift over every side evenly.
        rounds = [_one_round(work, roots, case, r, source / "recorders")
                  for r in range(max(1, args.repeat))]
        result = _summary(case, rounds)
        result.update(loadavg_before=load_before, loadavg_after=os.getloadavg(),
                      source_dir=None if args.source_dir is None else str(args.source_dir))
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(source, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
