"""A RecorderClient talks to a virtual recorder over a real pty."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from firmware_bridge.errors import AuthRefused, DeviceError, LinkClosed, LinkTimeout
from firmware_bridge.messages import ErrorCode, LogKind, OfficerRecord
from hw_sim.errors import SpecError
from hw_sim.footage import expected_files
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import Faults, FootageSpec
from hw_sim.storage import hostile_entries

from .sim_helpers import OpenClient, StartRecorder, small_spec

OFFICER = OfficerRecord("1001001", "李伟", "330102000000", "Lishui Health Enforcement")


async def test_auth_with_right_and_wrong_secret(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec())
    c = await open_client(rec.tty_path, auth=False)
    hello = await c.hello()
    assert hello.model == "DSJ-SIM1"
    with pytest.raises(AuthRefused) as exc:
        await c.identity()  # refused until authenticated
    assert exc.value.code == ErrorCode.AUTH_REQUIRED
    with pytest.raises(AuthRefused):
        await c.authenticate(b"not the fleet secret")
    assert [e.kind for e in rec.state.event_log].count(LogKind.AUTH_FAILURE) == 1
    await c.authenticate(DEFAULT_FLEET_SECRET)
    ident = await c.identity()
    assert (ident.serial, ident.model, ident.hardware_rev, ident.firmware) == (
        "BWC00001", "DSJ-SIM1", "A1", "1.0.0")


async def test_refused_auth_fault(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    rec = await start_recorder(small_spec(faults=Faults(refuse_auth=True)))
    c = await open_client(rec.tty_path, auth=False)
    await c.hello()
    with pytest.raises(AuthRefused):
        await c.authenticate(DEFAULT_FLEET_SECRET)


async def test_officer_get_set_persists_across_replug(
    tmp_path: Path, start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec()
    rec = await start_recorder(spec)
    c = await open_client(rec.tty_path)
    assert await c.get_officer() == OfficerRecord("", "", "", "")
    await c.set_officer(OFFICER)
    assert await c.get_officer() == OFFICER
    await rec.stop()
    rec2 = await start_recorder(spec)
    c2 = await open_client(rec2.tty_path)
    assert await c2.get_officer() == OFFICER
    log = await c2.event_log()  # the device log survives the replug too
    assert [e.index for e in log] == list(range(len(log)))
    assert [e.kind for e in log].count(LogKind.POWER_ON) == 2
    assert LogKind.OFFICER_ASSIGNED in [e.kind for e in log]


async def test_clock_drift_and_set(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    rec = await start_recorder(small_spec(clock_offset_s=-90.0, clock_drift_ppm=50.0))
    c = await open_client(rec.tty_path)
    r = await c.get_clock()
    assert -91_000 < r.offset_ms < -89_000
    await c.set_clock(int(time.time() * 1000))
    r = await c.get_clock()
    assert abs(r.offset_ms) < 1000
    assert rec.state.clock_sets == 1


async def test_clock_that_will_not_set(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(clock_offset_s=-90.0, faults=Faults(clock_set="error")))
    c = await open_client(rec.tty_path)
    with pytest.raises(DeviceError) as exc:
        await c.set_clock(int(time.time() * 1000))
    assert "cannot be set" in str(exc.value)
    assert (await c.get_clock()).offset_ms < -89_000
    rec2 = await start_recorder(
        small_spec("BWC00002", clock_offset_s=-90.0, faults=Faults(clock_set="ignored")))
    c2 = await open_client(rec2.tty_path)
    await c2.set_clock(int(time.time() * 1000))  # acknowledged ...
    assert (await c2.get_clock()).offset_ms < -89_000  # ... but not applied


async def test_battery_charges_while_docked(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(battery_percent=40, charge_percent_per_min=6000))
    c = await open_client(rec.tty_path)
    b0 = await c.battery()
    b1 = b0
    async with asyncio.timeout(60):  # at 100 %/s: +10 % within 0.1 s on an idle machine
        while b1.percent < b0.percent + 10:
            await asyncio.sleep(0.02)
            b1 = await c.battery()
    assert b0.charging and b1.percent >= b0.percent + 10
    assert b1.millivolts > b0.millivolts
    assert b0.health_percent > 80


async def test_failing_battery(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    rec = await start_recorder(small_spec(faults=Faults(battery_failing=True)))
    c = await open_client(rec.tty_path)
    b = await c.battery()
    assert not b.charging and b.health_percent < 50 and b.temperature_c > 45
    kinds = [e.kind for e in await c.event_log()]
    assert LogKind.HARDWARE_FAULT in kinds


async def test_mass_storage_toggles_file_visibility(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    seen: list[Path | None] = []
    spec = small_spec()
    rec = await start_recorder(spec, on_storage=seen.append)
    c = await open_client(rec.tty_path)
    assert rec.storage_path is None and not rec.storage_dir.exists()
    await c.set_mass_storage(True)
    assert seen == [rec.storage_dir] and rec.storage_path == rec.storage_dir
    names = sorted(os.listdir(rec.storage_dir / "DCIM" / "100BWC"))
    assert names == sorted(e.name.decode().rsplit("/", 1)[1] for e in expected_files(spec))
    await c.set_mass_storage(False)
    async with asyncio.timeout(60):
        while not (seen[-1] is None and not rec.storage_dir.exists()):
            await asyncio.sleep(0.01)
    assert seen == [rec.storage_dir, None] and not rec.storage_dir.exists()
    status = await c.storage()
    assert status.file_count == 3 and status.free_bytes < status.total_bytes


async def test_list_recordings_and_event_log(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec()
    rec = await start_recorder(spec)
    c = await open_client(rec.tty_path)
    listed = await c.list_recordings()
    exp = expected_files(spec)
    assert [(r.name, r.size, r.start_ms, r.end_ms) for r in listed] == [
        (e.name, e.size, e.start_ms, e.end_ms) for e in exp
    ]
    log = await c.event_log()
    starts = [e for e in log if e.kind == LogKind.RECORDING_START]
    assert [e.time_ms for e in starts] == [e.start_ms for e in exp]
    assert [e.index for e in log] == list(range(len(log)))
    assert await c.event_log(since_index=len(log)) == []


async def test_many_recordings_are_paged(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(footage=FootageSpec(count=400, size_bytes=100, start_ms=1_795_000_000_000))
    rec = await start_recorder(spec)
    c = await open_client(rec.tty_path)
    listed = await c.list_recordings()
    assert [r.name for r in listed] == [e.name for e in expected_files(spec)]


async def test_guarded_delete(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    spec = small_spec()
    rec = await start_recorder(spec)
    c = await open_client(rec.tty_path)
    e0, e1, _ = expected_files(spec)
    with pytest.raises(DeviceError) as exc:
        await c.delete_recording(e1.name, e1.size, bytes(32))
    assert "does not match" in str(exc.value)
    with pytest.raises(DeviceError):
        await c.delete_recording(b"DCIM/100BWC/missing.MP4", 1, e1.blake3)
    await c.delete_recording(e0.name, e0.size, e0.blake3)
    assert [r.name for r in await c.list_recordings()] == [e1.name, expected_files(spec)[2].name]
    assert (await c.storage()).file_count == 2
    assert rec.state.deletes == 1


async def test_hostile_names_are_listed(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(faults=Faults(hostile_names=True)))
    c = await open_client(rec.tty_path)
    names = {r.name for r in await c.list_recordings()}
    assert {e.name for e in hostile_entries()} <= names
    assert any(b"\xff" in n for n in names)


async def test_garbled_replies_recover(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec())
    c = await open_client(rec.tty_path, timeout=10.0, retries=2)
    rec.inject(b"\x13\x37garbage\x00\xff\x00")  # line noise between frames
    assert (await c.identity()).serial == "BWC00001"
    garbled = await start_recorder(small_spec("BWC00002", faults=Faults(garble_replies=3)))
    # Each garbled reply costs one retry after the timeout; generous for a loaded machine.
    c2 = await open_client(garbled.tty_path, auth=False, timeout=2.0, retries=3)
    await c2.hello()  # hello is idempotent: retried until a clean reply arrives
    assert garbled.replies_garbled == 3
    assert c2.stats.retries >= 1 and c2.stats.frames_discarded >= 1


async def test_missing_replies_time_out(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(faults=Faults(silent_commands=frozenset({"battery"}))))
    c = await open_client(rec.tty_path, timeout=0.2, retries=1)
    with pytest.raises(LinkTimeout):
        await c.battery()
    assert rec.replies_suppressed == 2  # the first try and one retry
    c.timeout = 10.0  # a reply that does come may be slow on a loaded machine
    assert (await c.identity()).serial == "BWC00001"  # the link still works


async def test_slow_replies(start_recorder: StartRecorder, open_client: OpenClient) -> None:
    rec = await start_recorder(small_spec(faults=Faults(reply_delay_s=0.2)))
    c = await open_client(rec.tty_path, timeout=2.0, retries=0)
    c.timeout = 0.05
    with pytest.raises(LinkTimeout):
        await c.get_officer()
    c.timeout = 3.0
    assert (await c.identity()).serial == "BWC00001"


async def test_dropped_bytes_time_out(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(faults=Faults(drop_byte_prob=1.0)))
    c = await open_client(rec.tty_path, auth=False, timeout=0.1, retries=0)
    with pytest.raises(LinkTimeout):
        await c.hello()


async def test_garbled_bytes_are_discarded(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(faults=Faults(garble_byte_prob=1.0)))
    c = await open_client(rec.tty_path, auth=False, timeout=0.1, retries=1)
    with pytest.raises(LinkTimeout):
        await c.hello()
    assert c.stats.frames_discarded >= 1 and c.stats.retries == 1
    rec.set_faults(Faults())
    c.timeout = 10.0  # a reply that does come may be slow on a loaded machine
    assert (await c.hello()).model == "DSJ-SIM1"  # the link recovers on the next good frame


async def test_unplug_closes_the_link(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec())
    c = await open_client(rec.tty_path)
    await rec.stop()
    assert rec.unplugged.is_set()
    with pytest.raises(LinkClosed):
        await c.identity()


async def test_standalone_recorder_context(tmp_path: Path, open_client: OpenClient) -> None:
    async with VirtualRecorder(small_spec(), tmp_path) as rec:
        c = await open_client(rec.tty_path)
        assert (await c.identity()).serial == "BWC00001"
    with pytest.raises(LinkClosed):
        await c.identity()


async def test_faults_change_while_plugged(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    rec = await start_recorder(small_spec(clock_offset_s=-90.0))
    c = await open_client(rec.tty_path, timeout=0.2, retries=0)
    rec.set_faults(Faults(silent_commands=frozenset({"identity"}), clock_set="error",
                          battery_failing=True))
    with pytest.raises(LinkTimeout):
        await c.identity()
    c.timeout = 10.0  # the replies that do come may be slow on a loaded machine
    with pytest.raises(DeviceError):
        await c.set_clock(int(time.time() * 1000))
    assert not (await c.battery()).charging
    rec.set_faults(Faults())
    assert (await c.identity()).serial == "BWC00001"
    with pytest.raises(SpecError):
        rec.set_faults(Faults(eio_at=((9, 0),)))  # there is no file 9
    rec.set_faults(Faults(refuse_auth=True))  # a new session: hello and auth again
    c.timeout = 2.0
    await c.hello()
    with pytest.raises(AuthRefused):
        await c.authenticate(DEFAULT_FLEET_SECRET)
    rec.set_faults(Faults())
    await c.hello()
    await c.authenticate(DEFAULT_FLEET_SECRET)
    assert (await c.identity()).serial == "BWC00001"
