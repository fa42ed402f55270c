"""Upload benchmark against a private local Ceph RGW.

    python -m bench.upload --json [--files 8] [--file-mib 16] [--backlog 1000]

- `agent_mb_s` vs `plain_mb_s`: the agent's uploader (queue, BLAKE3 + MD5 in the read
  pass, Content-MD5 per part, HEAD proof, ledger entries) against plain PUTs / multipart
  uploads of the same files with the same client and part size; `ratio` = agent / plain.
- `peak_rss_mib`: peak RSS of the uploader process (`python -m agent.upload --once`)
  while it uploads the large files.
- `backlog_drain_s`: time for that process to drain a backlog of `--backlog` small files.
- `peak_rss_mib_offloading_and_uploading`: peak RSS of one process running the real docking
  path (`bench.offload`) for `--recorders` recorders while the uploader drains each file
  as it is committed, on the same database (`offload_and_upload` has the details).
Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.schemas import ALL_SCHEMAS
from agent.store.db import Database
from agent.store.evidence import StoredFileRecord, commit_file, layout_relpath
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner
from agent.upload.s3client import S3Client, S3Config
from hw_sim import rgw

MIB = 1 << 20


def _fill(root: Path, n: int, size: int, tag: str) -> None:
    (root / "state").mkdir(parents=True)
    store = root / "evidence"
    db = Database(root / "state" / "dock.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("bench-dock", CheckpointSigner.from_file(root / "dock.key"))
    t0 = int(time.time() * 1e6) - 86_400_000_000
    try:
        recs = []
        for i in range(n):
            data = os.urandom(size)
            name = f"{tag}{i:05d}.MP4".encode()
            rel = layout_relpath("U1", "BENCH0001", "0001", dt.date(2026, 11, 1), name)
            path = store / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            recs.append(StoredFileRecord(
                recorder_serial="BENCH0001", session_id="s", bay="b", source_name=name,
                stored_relpath=rel, size=size, blake3_hex=blake3(data).hexdigest(),
                rec_start_us=t0, rec_end_us=t0 + 1, offload_start_us=t0, offload_end_us=t0,
                unit_no="U1", officer_no="0001", officer_name="Bench", late=False,
                late_by_s=0.0, deadline_us=None))

        def tx(conn: Any) -> None:
            for r in recs:
                commit_file(conn, ledger, r)

        db.write_sync(tx)
    finally:
        db.close()


def _config(root: Path, gw: rgw.Rgw, bucket: str, part_mib: int) -> Path:
    return rgw.agent_config(root, dock_id="bench-dock", endpoint=gw.endpoint, bucket=bucket,
                            region=gw.region, access_key=gw.access_key,
                            secret_key=gw.secret_key, key_file=root / "dock.key",
                            upload={"part_mib": part_mib, "object_lock": "off"})


def _run_agent(cfg: Path) -> tuple[float, float]:
    """Wall time and peak RSS (MiB, the process's own VmHWM) of `python -m agent.upload
    --once` (process start and imports included)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agent.upload", "--config", str(cfg),
                             "--once"])
    hwm = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"uploader exited with {proc.returncode}")
    return time.perf_counter() - t, hwm / 1024


def _plain(gw: rgw.Rgw, bucket: str, store: Path, part: int) -> float:
    c = S3Client(S3Config(gw.endpoint, bucket, gw.access_key, gw.secret_key, gw.region))
    c.create_bucket()
    files = sorted(p for p in store.rglob("*") if p.is_file())
    t = time.perf_counter()
    total = 0
    for p in files:
        key = "plain/" + p.name
        with p.open("rb") as fp:
            if p.stat().st_size <= part:
                body = fp.read()
                c.put(key, body, hashlib.md5(body).hexdigest(), {},
                      if_none_match=False)
            else:
                uid = c.create_multipart(key, {})
                parts: list[tuple[int, str]] = []
                while buf := fp.read(part):
                    md5 = hashlib.md5(buf).hexdigest()
                    parts.append((len(parts) + 1, c.upload_part(key, uid, len(parts) + 1,
                                                                buf, md5)))
                c.complete_multipart(key, uid, parts)
        total += p.stat().st_size
    return total / (time.perf_counter() - t) / 1e6


async def _agent_inprocess(root: Path, gw: rgw.Rgw, bucket: str, part_mib: int) -> float:
    """MB/s of the agent's Uploader draining `root`'s queue (in this process)."""
    from agent.settings import RetentionSettings, UploadSettings
    from agent.upload.uploader import Uploader

    conf = S3Config(gw.endpoint, bucket, gw.access_key, gw.secret_key, gw.region)
    S3Client(conf).create_bucket()
    db = Database(root / "state" / "dock.sqlite3", ALL_SCHEMAS)
    ledger = Ledger("bench-dock", CheckpointSigner.from_file(root / "dock.key"))
    settings = UploadSettings(enabled=True, part_mib=part_mib, object_lock="off")
    up = Uploader(db, ledger, root / "evidence", settings, RetentionSettings(),
                  lambda: S3Client(conf))
    total = sum(p.stat().st_size for p in (root / "evidence").rglob("*") if p.is_file())
    try:
        t = time.perf_counter()
        await up.drain()
        return total / (time.perf_counter() - t) / 1e6
    finally:
        up.close()
        db.close()


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _combined(work: Path, endpoint: str, bucket: str, recorders: int, files: int,
                    size: int, part_mib: int) -> dict[str, Any]:
    """In this (child) process: the offload bench's real docking path for `recorders`
    recorders and, at the same time on the same database, the uploader draining every
    file as it is committed. Returns the process's peak RSS."""
    import asyncio

    from agent.settings import RetentionSettings, UploadSettings
    from agent.upload.uploader import Uploader
    from bench.offload import _agent_run

    conf = S3Config(endpoint, bucket, rgw.ACCESS_KEY, rgw.SECRET_KEY, "default")
    S3Client(conf).create_bucket()
    t0 = time.perf_counter()
    offload = asyncio.create_task(_agent_run(work / "recorders", recorders, files, size,
                                             work / "agent", False))
    db_path = work / "agent" / "state" / "dock.sqlite3"
    while not db_path.exists():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    db = Database(db_path, ALL_SCHEMAS)
    settings = UploadSettings(enabled=True, part_mib=part_mib, object_lock="off",
                              while_offloading_mib_s=64.0)
    up = Uploader(db, Ledger("bench-dock"), work / "agent" / "store", settings,
                  RetentionSettings(), lambda: S3Client(conf), busy=lambda: not offload.done())
    uploaded = 0
    while not offload.done():
        uploaded += await up.drain()
        await asyncio.sleep(0.1)
    result = await offload
    uploaded += await up.drain()
    up.close()
    db.close()
    return {"recorders": recorders, "files_stored": result["files_stored"],
            "files_uploaded": uploaded, "seconds": round(time.perf_counter() - t0, 2),
            "peak_rss_mib": round(_vm_hwm_mib(), 1)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.upload")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--file-mib", type=int, default=16)
    ap.add_argument("--backlog", type=int, default=1000)
    ap.add_argument("--part-mib", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--recorders", type=int, default=8,
                    help="recorders offloading while the uploader runs (peak RSS part)")
    ap.add_argument("--combined-child", nargs=3, metavar=("DIR", "ENDPOINT", "BUCKET"),
                    help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _throughput(gw: rgw.Rgw, work: Path, args: argparse.Namespace
                ) -> tuple[list[float], list[float]]:
    """Plain and agent MB/s per round, interleaved: the machine is shared and noisy."""
    import asyncio

    plain, agent = [], []
    for r in range(args.rounds):
        root = work / f"big{r}"
        _fill(root, args.files, args.file_mib * MIB, "B")
        plain.append(_plain(gw, f"bench-plain-{r}", root / "evidence", args.part_mib * MIB))
        agent.append(asyncio.run(_agent_inprocess(root, gw, f"bench-agent-{r}",
                                                  args.part_mib)))
    return plain, agent


def _uploader_process(gw: rgw.Rgw, work: Path, name: str, files: int, size: int,
                      part_mib: int, tag: str) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of `python -m agent.upload --once` uploading `files`."""
    root = work / name
    _fill(root, files, size, tag)
    bucket = f"bench-{name}"
    S3Client(S3Config(gw.endpoint, bucket, gw.access_key, gw.secret_key,
                      gw.region)).create_bucket()
    return _run_agent(_config(root, gw, bucket, part_mib))


def _offload_and_upload(gw: rgw.Rgw, work: Path, args: argparse.Namespace
                        ) -> dict[str, Any]:
    """The combined run, in a child process so its peak RSS is its own."""
    from bench.offload import _generate

    both = work / "both"
    _generate(both / "recorders", args.recorders, 2, args.file_mib * MIB)
    child = subprocess.run(
        [sys.executable, "-m", "bench.upload", "--combined-child", str(both), gw.endpoint,
         "bench-both", "--recorders", str(args.recorders), "--file-mib",
         str(args.file_mib), "--part-mib", str(args.part_mib)],
        capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(f"combined run failed: {child.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return out


def _measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    gw = rgw.up(work / "rgw")
    plain, agent = _throughput(gw, work, args)
    proc_s, rss = _uploader_process(gw, work, "rss", args.files, args.file_mib * MIB,
                                    args.part_mib, "R")
    drain_s, drain_rss = _uploader_process(gw, work, "backlog", args.backlog, 64 << 10,
                                           args.part_mib, "S")
    combined = _offload_and_upload(gw, work, args)
    return {
        "files": args.files, "file_mib": args.file_mib, "part_mib": args.part_mib,
        "plain_mb_s": round(max(plain), 1), "agent_mb_s": round(max(agent), 1),
        "ratio": round(max(agent) / max(plain), 3),
        "uploader_process_mb_s": round(args.files * args.file_mib * MIB / proc_s / 1e6, 1),
        "peak_rss_mib": round(rss, 1), "backlog_files": args.backlog,
        "backlog_drain_s": round(drain_s, 2),
        "backlog_files_per_s": round(args.backlog / drain_s, 1),
        "backlog_peak_rss_mib": round(drain_rss, 1),
        "offload_and_upload": combined,
        "peak_rss_mib_offloading_and_uploading": combined["peak_rss_mib"],
    }


def main(argv: list[str] | None = None) -> int:
    import asyncio

    args = _parse(argv)
    if args.combined_child:
        d, endpoint, bucket = args.combined_child
        out = asyncio.run(_combined(Path(d), endpoint, bucket, args.recorders, 2,
                                    args.file_mib * MIB, args.part_mib))
        print(json.dumps(out))
        return 0
    if not rgw.available():
        print("bench.upload needs Ceph RGW (ceph-mon ceph-osd radosgw ceph-common)",
              file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    try:
        result = _measure(work, args)
    finally:
        rgw.down(work / "rgw")
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
