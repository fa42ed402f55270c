"""Firmware update against the real simulated recorder over a pty: trust checks, resume from
the durable offset after unplug and simulator restart, commit checks, A/B rollback."""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sim_helpers import OpenClient, StartRecorder, small_spec

from firmware_bridge import fwpackage as fp
from firmware_bridge import messages as m
from firmware_bridge.client import RecorderClient
from firmware_bridge.errors import FirmwareRefused
from hw_sim.dock import VirtualDock
from hw_sim.fwkeys import sim_vendor_key
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import Faults, RecorderSpec

FAST: dict[str, object] = {"link_bytes_per_s": 0, "boot_delay_s": 0.05,
                           "firmware_sync_chunks": 4}


async def until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make_package(size: int = 100_000, *, seed: int = 1, **kw: object) -> tuple[fp.PackageHeader,
                                                                                bytes]:
    image = random.Random(seed).randbytes(size)
    args: dict[str, object] = dict(vendor="dock-sim", models=["DSJ-SIM1"], version="1.1.0",
                                   min_from="1.0", max_from=None, private_key=sim_vendor_key(),
                                   created="2026-11-27T04:00:00Z")
    args.update(kw)
    data = fp.build_package(image, **args)  # type: ignore[arg-type]
    return fp.read_header(io.BytesIO(data)), image


def spec(**kw: object) -> RecorderSpec:
    return small_spec(**{**FAST, **kw})


async def send(c: RecorderClient, header: fp.PackageHeader, image: bytes,
               chunks: int | None = None) -> tuple[int, int]:
    """Begin (or resume) and send up to `chunks` chunks: (next offset, last durable)."""
    begin = await c.firmware_begin(header.manifest_bytes, header.signature)
    off = durable = begin.offset
    sent = 0
    while off < len(image) and (chunks is None or sent < chunks):
        data = image[off:off + begin.chunk_max]
        durable = await c.firmware_chunk(off, data)
        off += len(data)
        sent += 1
    return off, durable


async def reboot_and_reconnect(rec: VirtualRecorder, c: RecorderClient,
                               open_client: OpenClient) -> RecorderClient:
    boots = rec.firmware.updater.boots
    await c.reboot()
    await until(lambda: rec.firmware.updater.boots > boots and rec.plugged.is_set(),
                "the recorder to come back")
    return await open_client(rec.tty_path)


async def test_update_commit_reboot_runs_the_new_version(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(spec())
    c = await open_client(rec.tty_path)
    before = await c.firmware_status()
    assert (before.running_version, before.active_slot, before.last_result) == ("1.0.0", "A", 0)
    header, image = make_package()
    assert await send(c, header, image) == (len(image), len(image))
    status = await c.firmware_status()
    assert (status.staged_offset, status.staged_size) == (len(image), len(image))
    assert status.staged_blake3.hex() == header.manifest.blake3
    await c.firmware_commit()
    assert (await c.firmware_status()).slot_b_version == "1.1.0"
    c2 = await reboot_and_reconnect(rec, c, open_client)
    assert not c.is_open  # the recorder left the bus: the old connection is gone
    after = await c2.firmware_status()
    assert (after.running_version, after.active_slot, after.slot_a_version,
            after.last_result) == ("1.1.0", "B", "1.0.0", m.FirmwareResult.OK)
    assert (await c2.identity()).firmware == "1.1.0"
    assert (rec.dir / "firmware" / "slot-B.img").read_bytes() == image


@pytest.mark.parametrize("seed", [1, 2])
async def test_resume_after_unplug_and_restart_at_random_offsets(
    start_recorder: StartRecorder, open_client: OpenClient, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    s = spec()
    header, image = make_package(300_000, seed=seed)
    rec = await start_recorder(s)
    c = await open_client(rec.tty_path)
    chunk_bytes = m.FIRMWARE_CHUNK_MAX * s.firmware_sync_chunks
    for round_ in range(4):
        off, durable = await send(c, header, image, chunks=rng.randint(1, 15))
        assert durable <= off and durable % chunk_bytes == 0
        if round_ % 2:
            await rec.stop()  # unplug: what was not synced is lost
            await rec.start()
        else:  # the simulator dies and starts again: a new process's recorder object
            await rec.stop()
            rec = await start_recorder(s)
        c = await open_client(rec.tty_path)
        status = await c.firmware_status()
        assert status.staged_offset == durable, "resumes exactly at the durable point"
        assert (rec.dir / "firmware" / "staged.bin").stat().st_size == durable
        begin = await c.firmware_begin(header.manifest_bytes, header.signature)
        assert begin.offset == durable
    assert await send(c, header, image) == (len(image), len(image))
    await c.firmware_commit()
    c = await reboot_and_reconnect(rec, c, open_client)
    assert (await c.identity()).firmware == "1.1.0"
    assert (rec.dir / "firmware" / "slot-B.img").read_bytes() == image


@pytest.mark.parametrize(("mode", "result"), [("self_test", m.FirmwareResult.SELF_TEST_FAILED),
                                              ("no_boot", m.FirmwareResult.ROLLED_BACK)])
async def test_a_failing_new_image_rolls_back(
    start_recorder: StartRecorder, open_client: OpenClient, mode: str, result: int
) -> None:
    rec = await start_recorder(spec(faults=Faults(firmware_boot=mode)))  # type: ignore[arg-type]
    c = await open_client(rec.tty_path)
    header, image = make_package()
    await send(c, header, image)
    await c.firmware_commit()
    c = await reboot_and_reconnect(rec, c, open_client)
    status = await c.firmware_status()
    assert (status.running_version, status.active_slot, status.slot_b_version,
            status.last_result) == ("1.0.0", "A", "1.1.0", result)
    assert (await c.identity()).firmware == "1.0.0"


@pytest.mark.parametrize(("kw", "code"), [
    ({"models": ["OTHER-1"]}, m.ErrorCode.FIRMWARE_MODEL),
    ({"min_from": "1.0.1"}, m.ErrorCode.FIRMWARE_VERSION),
    ({"max_from": "0.9"}, m.ErrorCode.FIRMWARE_VERSION),
    ({"private_key": fp.Ed25519PrivateKey.from_private_bytes(bytes(32))},
     m.ErrorCode.FIRMWARE_SIGNATURE),
])
async def test_the_recorder_refuses_what_is_not_for_it(
    start_recorder: StartRecorder, open_client: OpenClient, kw: dict[str, object], code: int
) -> None:
    rec = await start_recorder(spec())
    c = await open_client(rec.tty_path)
    header, _ = make_package(**kw)
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_begin(header.manifest_bytes, header.signature)
    assert err.value.code == code and err.value.durable_offset is None
    assert (await c.firmware_status()).staged_size == 0


async def test_bad_signature_and_malformed_manifest_are_refused(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(spec())
    c = await open_client(rec.tty_path)
    header, _ = make_package()
    bad = bytes([header.signature[0] ^ 1]) + header.signature[1:]
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_begin(header.manifest_bytes, bad)
    assert err.value.code == m.ErrorCode.FIRMWARE_SIGNATURE
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_begin(header.manifest_bytes + b" ", header.signature)
    assert err.value.code == m.ErrorCode.FIRMWARE_MANIFEST


async def test_chunk_and_commit_refusals_carry_the_durable_offset(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(spec())
    c = await open_client(rec.tty_path)
    header, image = make_package()
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_chunk(0, image[:100])
    assert err.value.code == m.ErrorCode.FIRMWARE_NO_TRANSFER
    off, durable = await send(c, header, image, chunks=6)
    assert (off, durable) == (6 * m.FIRMWARE_CHUNK_MAX, 4 * m.FIRMWARE_CHUNK_MAX)
    with pytest.raises(FirmwareRefused) as err:  # a gap
        await c.firmware_chunk(off + 1, image[off + 1:off + 100])
    assert (err.value.code, err.value.durable_offset) == (m.ErrorCode.FIRMWARE_OFFSET, durable)
    with pytest.raises(FirmwareRefused) as err:  # received beyond durable was forgotten
        await c.firmware_chunk(off, image[off:off + 100])
    assert err.value.durable_offset == durable
    with pytest.raises(FirmwareRefused) as err:  # damaged on the way
        await c._call(m.FirmwareChunk(durable, 0, image[durable:durable + 100]))
    assert (err.value.code, err.value.durable_offset) == (m.ErrorCode.FIRMWARE_CRC, durable)
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_commit()
    assert (err.value.code, err.value.durable_offset) == (m.ErrorCode.FIRMWARE_INCOMPLETE,
                                                          durable)
    assert await c.firmware_chunk(durable, image[durable:durable + 10]) == durable  # resync


async def test_commit_verifies_the_whole_image_itself(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(spec())
    c = await open_client(rec.tty_path)
    header, image = make_package()
    await send(c, header, image)
    staged = rec.dir / "firmware" / "staged.bin"
    data = bytearray(staged.read_bytes())
    data[12345] ^= 0x40  # the recorder's flash flipped a bit
    staged.write_bytes(bytes(data))
    with pytest.raises(FirmwareRefused) as err:
        await c.firmware_commit()
    assert (err.value.code, err.value.durable_offset) == (m.ErrorCode.FIRMWARE_HASH, 0)
    status = await c.firmware_status()
    assert (status.staged_size, status.slot_b_version) == (0, "")
    assert (await c.firmware_begin(header.manifest_bytes, header.signature)).offset == 0


async def test_reboot_in_a_dock_bay_unplugs_and_replugs_the_same_bay(tmp_path: Path) -> None:
    async with VirtualDock(2, workdir=tmp_path) as dock:
        first = await dock.plug("2", spec())
        c = await RecorderClient.open(first.tty_path)
        try:
            await c.hello()
            await c.authenticate(DEFAULT_FLEET_SECRET)
            header, image = make_package()
            await send(c, header, image)
            await c.firmware_commit()
            await c.reboot()
        finally:
            await c.close()
        await until(lambda: dock.recorders.get("2") not in (None, first), "the re-plug")
        again = dock.recorders["2"]
        c = await RecorderClient.open(again.tty_path)
        try:
            await c.hello()
            await c.authenticate(DEFAULT_FLEET_SECRET)
            assert (await c.identity()).firmware == "1.1.0"
        finally:
            await c.close()
