"""bench.docking runs end to end against the real agent and a private broker and prints
every key of its contract (the values are facts to read, never checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = {"docked_ms_p50", "docked_ms_p99", "identified_ms_p50", "identified_ms_p99",
        "first_byte_ms_p50", "first_byte_ms_p99", "plugs", "busy_bays", "broker_tcp_nodelay"}


def test_bench_docking_prints_its_keys() -> None:
    root = Path(__file__).resolve().parents[2]
    # a short scratch path: the simulator's socket lives below it (AF_UNIX paths are short)
    with tempfile.TemporaryDirectory(prefix="bd-", dir="/tmp") as work:
        out = subprocess.run(
            [sys.executable, "-m", "bench.docking", "--plugs", "2", "--busy", "1",
             "--workdir", work, "--json"],
            cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert KEYS <= result.keys()
    assert result["plugs"] == 2 and result["identified_ms_p50"] is not None
    assert result["broker_tcp_nodelay"] is False
    assert result["busy_throttle"] in ("kernel", "fuse")


def test_bench_docking_can_run_its_broker_without_nagle() -> None:
    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="bd-", dir="/tmp") as work:
        out = subprocess.run(
            [sys.executable, "-m", "bench.docking", "--plugs", "1", "--busy", "1",
             "--broker-nodelay", "--workdir", work, "--json"],
            cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["broker_tcp_nodelay"] is True and result["plugs"] == 1
