"""kill -9 at many random points of offloads, then rerun: nothing lost, nothing corrupt,
no record without a durable file, nothing wiped that is not stored and recorded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from .offload_helpers import check_store_invariants, make_file, rows

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]
SIZES = [6 * MiB + 3, 1, 4 * MiB, 5 * MiB + 77, 0]
ITERATIONS = 10
KILLS_PER_ITERATION = 2


def _setup(base: Path) -> tuple[Path, Path, Path, Path, dict[bytes, bytes]]:
    src, store, db = base / "rec", base / "store", base / "state" / "dock.sqlite3"
    store.mkdir(parents=True)
    files = {}
    for i, size in enumerate(SIZES):
        name = f"DCIM/100BWC/F{i:03d}.MP4".encode()
        files[name] = make_file(src, name, size, seed=name + b"kill")
    return src, store, db, base / "wipe.log", files


def _run(src: Path, store: Path, db: Path, log: Path, kill_after: float | None) -> str | None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.offload.crash_child", str(db), str(store), str(src),
         str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else ""
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None
    out = proc.stdout.read()  # not communicate(): readline() may have buffered it already
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.wait(timeout=300) == 0, err.decode()
    return out.decode()


def _check(src: Path, store: Path, db: Path, log: Path, files: dict[bytes, bytes]) -> None:
    index = check_store_invariants(db, store) if db.exists() else []  # record => durable file
    recorded = {(bytes(r["source_name"]), r["blake3"]) for r in index}
    wiped = []
    if log.exists():
        for line in log.read_text().splitlines():
            w = json.loads(line)
            wiped.append(bytes.fromhex(w["name"]))
            assert (bytes.fromhex(w["name"]), w["blake3"]) in recorded  # wiped => recorded
    for name, data in files.items():
        path = src / name.decode()
        if path.exists():
            assert path.read_bytes() == data  # the recorder's copy is never altered
        else:
            assert name in wiped  # gone from the recorder only through the logged wipe
            assert (name, blake3.blake3(data).hexdigest()) in recorded  # nothing lost


@pytest.mark.slow
@pytest.mark.timeout(900)  # dozens of child processes: slow, not stuck, on a loaded machine
def test_kill_minus_9_anywhere(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    # calibrate: how long does a whole offload take here?
    src, store, db, log, files = _setup(tmp_path / "calibrate")
    t0 = time.monotonic()
    _run(src, store, db, log, None)
    duration = time.monotonic() - t0
    _check(src, store, db, log, files)
    points = []
    states: set[str] = set()
    for it in range(ITERATIONS):
        src, store, db, log, files = _setup(tmp_path / f"it{it}")
        for _ in range(KILLS_PER_ITERATION):
            point = rng.uniform(0.0, duration * 1.1)
            points.append(point)
            _run(src, store, db, log, point)
            _check(src, store, db, log, files)
            states.add(_state(db))
        out = _run(src, store, db, log, None)
        assert out is not None
        result = json.loads(out.strip().splitlines()[-1])
        assert result["outcome"] == "complete", result
        _check(src, store, db, log, files)
        index = rows(db, "SELECT source_name, blake3 FROM evidence_files")
        assert {bytes(r[0]): r[1] for r in index} == {
            n: blake3.blake3(d).hexdigest() for n, d in files.items()}  # all stored, once
        assert rows(db, "SELECT * FROM offload_journal") == []
        assert not [n for _d, _s, ns in os.walk(store) for n in ns if n.startswith(".partial-")]
        assert not any((src / n.decode()).exists() for n in files)  # all wiped in the end
    assert len(points) == ITERATIONS * KILLS_PER_ITERATION
    print("kill states reached:", sorted(states))
    assert len(states) >= 2  # the kills did land at different stages


def _state(db: Path) -> str:
    """Coarse stage a kill left behind (for coverage reporting)."""
    if not db.exists():
        return "before-db"
    j = rows(db, "SELECT durable_len, complete FROM offload_journal")
    n = len(rows(db, "SELECT id FROM evidence_files"))
    w = len(rows(db, "SELECT id FROM evidence_files WHERE wiped = 1"))
    mid = "complete-partial" if any(r[1] for r in j) else (
        "durable-partial" if any(r[0] for r in j) else ("journal-only" if j else "no-journal"))
    return f"{n}-recorded/{w}-wiped/{mid}"
