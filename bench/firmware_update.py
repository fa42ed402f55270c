"""Firmware transfer over the simulated recorder link; prints one JSON object.

    python -m bench.firmware_update [--mib 64] [--link-bytes-per-s 1000000] [--interrupt-at 0.4]

Transfers a signed image of --mib MiB to a virtual recorder (link throttled like a CDC-ACM
port), unplugs it once at --interrupt-at of the image, re-plugs, resumes from the
recorder's durable offset, commits and reboots; reports times, bytes re-sent and the
version the recorder runs afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tempfile
import time
from pathlib import Path

from firmware_bridge import fwpackage as fp
from firmware_bridge.client import RecorderClient
from hw_sim.fwkeys import sim_vendor_key
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import FootageSpec, RecorderSpec

MIB = 1 << 20


async def _client(rec: VirtualRecorder) -> RecorderClient:
    c = await RecorderClient.open(rec.tty_path)
    await c.hello()
    await c.authenticate(DEFAULT_FLEET_SECRET)
    return c


async def _send(c: RecorderClient, header: fp.PackageHeader, image: bytes,
                stop_at: int | None) -> tuple[int, int, int]:
    """(resume offset, next offset, last durable offset) after sending up to stop_at."""
    begin = await c.firmware_begin(header.manifest_bytes, header.signature)
    off = durable = begin.offset
    while off < len(image) and (stop_at is None or off < stop_at):
        data = image[off:off + begin.chunk_max]
        durable = await c.firmware_chunk(off, data)
        off += len(data)
    return begin.offset, off, durable


async def run(mib: int, rate: int, interrupt_at: float) -> dict[str, object]:
    image = os.urandom(mib * MIB)
    package = fp.build_package(image, vendor="dock-sim", models=["DSJ-SIM1"], version="1.1.0",
                               min_from=None, max_from=None, private_key=sim_vendor_key(),
                               created="2026-11-27T00:00:00Z")
    header = fp.read_header(io.BytesIO(package))
    spec = RecorderSpec("BENCH001", footage=FootageSpec(count=0), link_bytes_per_s=rate,
                        boot_delay_s=0.2)
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        rec = VirtualRecorder(spec, Path(tmp))
        await rec.start()
        c = await _client(rec)
        t0 = time.monotonic()
        _, sent, durable = await _send(c, header, image, int(len(image) * interrupt_at))
        await c.close()
        await rec.stop()  # unplugged mid-transfer
        await rec.start()
        c = await _client(rec)
        t1 = time.monotonic()
        resumed, _, _ = await _send(c, header, image, None)
        t2 = time.monotonic()
        await c.firmware_commit()
        t3 = time.monotonic()
        await c.reboot()
        await c.close()
        while rec.firmware.updater.boots < 3 or not rec.plugged.is_set():
            await asyncio.sleep(0.01)
        c = await _client(rec)
        running = (await c.identity()).firmware
        await c.close()
        await rec.stop()
    moved = sent + (len(image) - resumed)
    return {
        "image_bytes": len(image), "link_bytes_per_s": rate,
        "interrupted_at": sent, "durable_at_interrupt": durable, "resumed_at": resumed,
        "resent_bytes": sent - resumed,
        "transfer_s": round((t1 - t0) + (t2 - t1), 2), "first_leg_s": round(t1 - t0, 2),
        "commit_s": round(t3 - t2, 2),
        "throughput_bytes_per_s": round(moved / ((t1 - t0) + (t2 - t1))),
        "full_image_estimate_s": round(len(image) * ((t1 - t0) + (t2 - t1)) / moved, 2),
        "running_version": running,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.firmware_update")
    p.add_argument("--mib", type=int, default=64)
    default_rate = RecorderSpec("X0000000").link_bytes_per_s
    p.add_argument("--link-bytes-per-s", type=int, default=default_rate)
    p.add_argument("--interrupt-at", type=float, default=0.4)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.mib, a.link_bytes_per_s, a.interrupt_at))))


if __name__ == "__main__":
    main()
