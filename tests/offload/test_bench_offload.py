"""bench.offload runs end to end and prints every key of its contract (the values are
facts to read, never checked here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

KEYS = {"agent_mb_s", "cp_sync_mb_s", "ratio", "dd_direct_mb_s", "write_limit_mb_s",
        "ratio_write_limit", "cpu_s_per_gib", "cpu_ratio", "loop_lag_p99_ms", "peak_rss_mb",
        "fairness", "idle_loop_lag_p99_ms", "size_only_durable_points_mb_s", "runs",
        "verify_on_mb_s", "verify_ratio", "peak_rss_breakdown", "read_write_limit_mb_s",
        "ratio_read_write_limit", "aggregate_goal_mb_s", "ratio_goal", "steady_mb_s",
        "steady_seconds", "steady_ratio_goal"}


def test_bench_offload_prints_its_keys() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "BENCH_KEEP_CACHES": "1"}
    # a short scratch path: the simulator's socket lives below it (AF_UNIX paths are short)
    with tempfile.TemporaryDirectory(prefix="bo-", dir="/tmp") as work:
        out = subprocess.run(
            [sys.executable, "-m", "bench.offload", "--files", "2", "--size-kib", "300",
             "--repeat", "1", "--workdir", work, "--verify", "both", "--json"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert KEYS <= result.keys()
    assert result["runs"][0]["files_stored"] == 2
    assert result["runs"][0]["outcomes"] == ["complete"]
    assert result["verify"] == "both" and result["verify_ratio"] is not None
    assert {"rss_mb", "anon_mb", "file_mb", "shmem_mb"} <= result["peak_rss_breakdown"].keys()


def test_bench_offload_single_run_for_memory_cases() -> None:
    """`--single-run` (the memory cases at scale): one agent run, the size-only keys null."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "BENCH_KEEP_CACHES": "1"}
    with tempfile.TemporaryDirectory(prefix="bo-", dir="/tmp") as work:
        out = subprocess.run(
            [sys.executable, "-m", "bench.offload", "--files", "3", "--size-kib", "4",
             "--repeat", "1", "--agent-only", "--single-run", "--workdir", work, "--json"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert KEYS <= result.keys()
    assert result["runs"][0]["files_stored"] == 3
    assert result["size_only_durable_points_mb_s"] is None
    assert result["peak_rss_breakdown"]["rss_mb"] > 0


def _kernel_throttle_unavailable() -> str | None:
    from hw_sim.blockvolume import kernel_throttle_unavailable

    return kernel_throttle_unavailable()


@pytest.mark.skipif(_kernel_throttle_unavailable() is not None,
                    reason=f"kernel read throttle: {_kernel_throttle_unavailable()}")
def test_bench_offload_with_recorders_throttled_by_the_kernel() -> None:
    """`--recorder-throttle kernel`: every recorder's footage in its own throttled image;
    the agent offloads it all, the baselines read the same files from the images, and no
    loop device or mount is left behind."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "BENCH_KEEP_CACHES": "1"}
    with tempfile.TemporaryDirectory(prefix="bo-", dir="/tmp") as work:
        out = subprocess.run(
            [sys.executable, "-m", "bench.offload", "--recorders", "2", "--files", "2",
             "--size-kib", "512", "--recorder-rate-mb-s", "50", "--recorder-throttle",
             "kernel", "--repeat", "1", "--single-run", "--workdir", work, "--json"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
        attached = subprocess.run(["losetup", "--list", "--noheadings", "--output",
                                   "BACK-FILE"], capture_output=True, text=True, check=True)
        with open("/proc/self/mounts") as fh:
            mounts = fh.read()
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["recorder_throttle"] == "kernel"
    assert sum(r["files_stored"] for r in result["runs"]) == 4
    assert result["dd_direct_mb_s"] is not None and result["cp_sync_mb_s"] is not None
    assert work not in attached.stdout and work not in mounts
