"""The recorder's staging rules under hostile host behaviour and power loss, without I/O
between host and recorder: whatever the host sends, in whatever order, with any power
cuts, a commit succeeds only with exactly the signed image, and resume never skips bytes."""

from __future__ import annotations

import io
import random
import tempfile
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import fwpackage as fp
from firmware_bridge.messages import FIRMWARE_CHUNK_MAX, ErrorCode, FirmwareResult
from hw_sim.endpoint import DeviceFault
from hw_sim.fwkeys import sim_vendor_key
from hw_sim.fwupdate import FirmwareUpdater
from hw_sim.spec import Faults, FootageSpec, RecorderSpec

SPEC = RecorderSpec("FWMODEL1", footage=FootageSpec(count=0), firmware_sync_chunks=3)
IMAGE = random.Random(7).randbytes(5 * FIRMWARE_CHUNK_MAX + 123)
HEADER = fp.read_header(io.BytesIO(fp.build_package(
    IMAGE, vendor="x", models=[SPEC.model], version="2.0", min_from=None, max_from=None,
    private_key=sim_vendor_key(), created="2026-11-27T00:00:00Z")))


def powered(directory: Path) -> FirmwareUpdater:
    up = FirmwareUpdater(SPEC, directory, lambda: Faults())
    up.power_on()
    return up


def step(up: FirmwareUpdater, rnd: random.Random, host_next: int) -> int:
    """One hostile or honest host action; returns where the host will send next."""
    action = rnd.choice(["chunk", "chunk", "chunk", "stray", "badcrc", "begin", "commit"])
    try:
        if action == "begin":
            return up.begin(HEADER.manifest_bytes, HEADER.signature).offset
        if action == "commit":
            up.commit()
            return -1
        off = host_next if action != "stray" else rnd.randrange(0, len(IMAGE))
        data = IMAGE[off:off + rnd.randint(1, FIRMWARE_CHUNK_MAX)]
        if not data:
            return host_next
        crc = zlib.crc32(data) ^ (1 if action == "badcrc" else 0)
        up.chunk(off, crc, data)
        return off + len(data)
    except DeviceFault as fault:
        assert fault.code in {ErrorCode.FIRMWARE_OFFSET, ErrorCode.FIRMWARE_CRC,
                              ErrorCode.FIRMWARE_INCOMPLETE, ErrorCode.FIRMWARE_NO_TRANSFER}
        return fault.durable_offset if fault.durable_offset is not None else host_next


@settings(max_examples=20, deadline=None)
@given(st.randoms(use_true_random=False))
def test_any_host_behaviour_and_power_cuts_commit_only_the_signed_image(
    rnd: random.Random,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        up = powered(directory)
        host_next = up.begin(HEADER.manifest_bytes, HEADER.signature).offset
        for _ in range(80):
            if rnd.random() < 0.1:  # power cut: only what was synced survives
                durable = up.transfer.durable if up.transfer else None
                up = powered(directory)
                if durable is not None:
                    assert up.transfer is not None and up.transfer.durable == durable
                    staged = directory / "firmware" / "staged.bin"
                    assert staged.read_bytes() == IMAGE[:durable]  # never a byte skipped
                host_next = up.begin(HEADER.manifest_bytes, HEADER.signature).offset
                continue
            host_next = step(up, rnd, host_next)
            if host_next == -1:  # committed
                break
        else:
            return
        assert (directory / "firmware" / f"slot-{up.slots.pending}.img").read_bytes() == IMAGE
        up = powered(directory)
        assert (up.running_version, up.slots.last_result) == ("2.0", FirmwareResult.OK)
