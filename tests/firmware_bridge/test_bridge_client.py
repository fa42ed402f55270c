"""RecorderClient over a real pty, against the real DeviceEndpoint and DeviceServer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from firmware_bridge import messages as m
from firmware_bridge.client import RecorderClient
from firmware_bridge.codec import decode_frame, encode_frame
from firmware_bridge.errors import (
    AuthRefused,
    DeviceError,
    LinkClosed,
    LinkTimeout,
    ProtocolError,
)
from hw_sim.endpoint import DeviceEndpoint, DeviceFault, DeviceServer, open_pty

from .bridge_helpers import SECRET, T0, Device, MemoryRecorder, raw_frame

# Hang guard only: a correct client finishes far sooner; nothing asserts on durations.
GUARD = 30.0
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_every_command(authed: RecorderClient, recorder: MemoryRecorder) -> None:
    assert authed.hello_info == m.Hello(1, "BWC-7")
    assert await authed.identity() == m.Identity("DA000042", "BWC-7", "rev C", "2.4.1")
    rec = m.OfficerRecord("0012345", "李四", "330100", "市卫生监督所")
    await authed.set_officer(rec)
    assert await authed.get_officer() == rec == recorder.officer

    before = time.time()
    reading = await authed.get_clock()
    after = time.time()
    assert reading.device_utc_ms == T0
    assert before <= reading.sent_wall <= reading.received_wall <= after
    assert reading.offset_ms == pytest.approx(
        T0 - (reading.sent_wall + reading.received_wall) * 500, abs=1e-3
    )
    await authed.set_clock(T0 + 123_456)
    assert recorder.clock_ms == T0 + 123_456

    assert await authed.battery() == m.BatteryStatus(87, 4012, True, 31.5, 120, 96)
    st = await authed.storage()
    assert st.file_count == 3 and not st.recording
    await authed.set_mass_storage(True)
    assert recorder.mass_storage
    await authed.set_mass_storage(False)
    assert not recorder.mass_storage

    files = await authed.list_recordings()
    assert [f.name for f in files] == sorted(recorder.files)
    assert [f.size for f in files] == [1000, 1001, 1002]
    events = await authed.event_log()
    assert [e.kind for e in events] == [
        m.LogKind.POWER_ON,
        m.LogKind.RECORDING_START,
        m.LogKind.RECORDING_STOP,
    ]
    assert [e.index for e in await authed.event_log(since_index=2)] == [2]
    assert await authed.event_log(since_index=3) == []
    assert authed.stats.retries == 0 and authed.stats.timeouts == 0


async def test_guarded_delete(authed: RecorderClient, recorder: MemoryRecorder) -> None:
    name = b"DCIM/100REC/V00001.MP4"
    data = recorder.files[name]
    good = blake3.blake3(data).digest()
    with pytest.raises(DeviceError) as e:
        await authed.delete_recording(name, len(data), blake3.blake3(b"other").digest())
    assert e.value.code == m.ErrorCode.MISMATCH
    with pytest.raises(DeviceError) as e:
        await authed.delete_recording(name, len(data) + 1, good)
    assert e.value.code == m.ErrorCode.MISMATCH
    with pytest.raises(DeviceError) as e:
        await authed.delete_recording(b"DCIM/none.MP4", len(data), good)
    assert e.value.code == m.ErrorCode.NOT_FOUND
    assert name in recorder.files  # nothing lost on any refusal
    await authed.delete_recording(name, len(data), good)
    assert name not in recorder.files


@pytest.mark.parametrize("recorder", [MemoryRecorder(n_files=1000)], ids=["1000files"])
async def test_list_recordings_pages(authed: RecorderClient, recorder: MemoryRecorder) -> None:
    recorder.add_file(b"DCIM/\xff\xfe-not-utf8.MP4", b"abc")
    files = await authed.list_recordings()
    assert [f.name for f in files] == sorted(recorder.files)
    assert len(files) == 1001
    assert recorder.calls.count("list_recordings") >= 4  # 1001 / 256 per page


async def test_read_recordings_hands_over_each_page_as_it_arrives(
        authed: RecorderClient, recorder: MemoryRecorder) -> None:
    for i in range(600):
        recorder.add_file(f"DCIM/F{i:04d}.MP4".encode(), b"x")
    pages: list[tuple[m.RecordingInfo, ...]] = []
    seen: list[tuple[int, int]] = []
    count = await authed.read_recordings(pages.append,
                                         lambda got, total: seen.append((got, total)))
    assert count == len(recorder.files) and len(pages) >= 3
    assert all(0 < len(p) <= 256 for p in pages)
    assert [r.name for p in pages for r in p] == sorted(recorder.files)
    assert [got for got, _ in seen] == [sum(map(len, pages[:n + 1])) for n in range(len(pages))]


async def test_list_recordings_reports_each_page(authed: RecorderClient,
                                                 recorder: MemoryRecorder) -> None:
    for i in range(600):
        recorder.add_file(f"DCIM/F{i:04d}.MP4".encode(), b"x")
    seen: list[tuple[int, int]] = []
    files = await authed.list_recordings(on_page=lambda got, total: seen.append((got, total)))
    assert len(seen) >= 3 and seen[-1] == (len(files), len(files))
    assert [got for got, _ in seen] == sorted({got for got, _ in seen})  # progress each page


async def test_listing_that_claims_too_many_recordings_is_refused(
        authed: RecorderClient, recorder: MemoryRecorder) -> None:
    from firmware_bridge.client import MAX_LISTING
    from firmware_bridge.errors import ProtocolError

    recorder.list_recordings = (  # type: ignore[method-assign]
        lambda offset, limit: m.RecordingPage(MAX_LISTING + 1, ()))
    with pytest.raises(ProtocolError, match="recordings"):
        await authed.list_recordings()


async def test_event_log_pages(authed: RecorderClient, recorder: MemoryRecorder) -> None:
    recorder.log = [m.DeviceLogEvent(i, T0 + i, m.LogKind.CLOCK_SET, "x" * 300) for i in range(600)]
    events = await authed.event_log(since_index=5)
    assert [e.index for e in events] == list(range(5, 600))
    assert recorder.calls.count("event_log") >= 3


async def test_auth_required_and_refused(client: RecorderClient, recorder: MemoryRecorder) -> None:
    with pytest.raises(DeviceError) as e:
        await client.identity()
    assert e.value.code == m.ErrorCode.HELLO_REQUIRED
    await client.hello()
    with pytest.raises(AuthRefused) as a:
        await client.identity()
    assert a.value.code == m.ErrorCode.AUTH_REQUIRED
    with pytest.raises(AuthRefused) as a:
        await client.authenticate(b"wrong fleet secret")
    assert a.value.code == m.ErrorCode.AUTH_FAILED
    with pytest.raises(AuthRefused):
        await client.battery()
    await client.authenticate(SECRET)
    assert (await client.battery()).percent == 87
    assert "battery" in recorder.calls and recorder.calls.count("battery") == 1


async def test_impostor_device_is_refused(client: RecorderClient, device: Device) -> None:
    async def forge(frame: bytes) -> bytes | None:
        f = decode_frame(frame)
        if isinstance(f.message, m.AuthAccepted):
            return encode_frame(f.request_id, m.AuthAccepted(b"\x00" * 32))
        return frame

    device.reply_filter = forge
    await client.hello()
    with pytest.raises(AuthRefused, match="failed to prove"):
        await client.authenticate(SECRET)


async def test_device_error_codes(authed: RecorderClient, recorder: MemoryRecorder) -> None:

    def busy(on: bool) -> None:
        raise DeviceFault(m.ErrorCode.BUSY, "recording in progress")

    recorder.set_mass_storage = busy  # type: ignore[method-assign]
    with pytest.raises(DeviceError) as e:
        await authed.set_mass_storage(True)
    assert e.value.code == m.ErrorCode.BUSY and e.value.message == "recording in progress"
    assert authed.stats.error_replies == 1
    assert authed.stats.retries == 0  # an error reply is an answer, never retried


async def test_timeout_retries_idempotent_only(
    authed: RecorderClient, device: Device, recorder: MemoryRecorder
) -> None:
    async def swallow(frame: bytes) -> bytes | None:
        return None

    device.reply_filter = swallow
    authed.timeout = 0.2
    recorder.calls.clear()
    with pytest.raises(LinkTimeout):
        await asyncio.wait_for(authed.battery(), GUARD)
    assert authed.stats.retries == 2 and authed.stats.timeouts == 3
    with pytest.raises(LinkTimeout):
        await asyncio.wait_for(authed.set_clock(T0 + 5), GUARD)
    assert authed.stats.retries == 2  # not idempotent: no retry

    # One answered round trip proves the device has seen everything sent before it.
    device.reply_filter = None
    authed.timeout = 5.0
    await authed.storage()
    assert recorder.calls == ["battery"] * 3 + ["set_clock", "storage"]


async def test_lost_reply_is_retried(
    authed: RecorderClient, device: Device, recorder: MemoryRecorder
) -> None:
    dropped: list[bytes] = []

    async def drop_first(frame: bytes) -> bytes | None:
        if not dropped:
            dropped.append(frame)
            return None
        return frame

    device.reply_filter = drop_first
    authed.timeout = 0.3
    authed.retries = 50  # a slow machine may need more than one retry
    recorder.calls.clear()
    assert (await authed.storage()).file_count == 3
    assert authed.stats.retries >= 1
    assert recorder.calls.count("storage") == 1 + authed.stats.retries


async def test_late_reply_is_dropped_as_unexpected(authed: RecorderClient, device: Device) -> None:
    held: list[bytes] = []

    async def hold_first(frame: bytes) -> bytes | None:
        if not held:
            held.append(frame)
            return None
        return frame

    device.reply_filter = hold_first
    authed.timeout = 0.3
    authed.retries = 50  # a slow machine may need more than one retry
    ident = await authed.identity()
    device.server.inject(held[0])  # the first attempt's reply arrives after all
    # A request id never sent, too:
    device.server.inject(encode_frame(0xFFFF, m.ClockTime(1)))
    assert (await authed.identity()) == ident
    await asyncio.wait_for(until(lambda: authed.stats.unexpected_replies >= 2), GUARD)


async def test_garbage_on_the_line(authed: RecorderClient, device: Device) -> None:
    garbled: list[bytes] = []

    async def garble_first(frame: bytes) -> bytes | None:
        if not garbled:
            garbled.append(frame)
            bad = bytearray(frame)
            bad[len(bad) // 2] ^= 0x40
            return b"\xff\x13noise" + bytes(bad) + b"\x01\x02junk"
        return frame

    device.server.inject(b"\x00\x07random line noise\x00\x13\x37")
    device.reply_filter = garble_first
    authed.timeout = 0.3
    authed.retries = 50  # a slow machine may need more than one retry
    assert (await authed.battery()).millivolts == 4012
    assert authed.stats.frames_discarded >= 2
    assert authed.stats.decoder.crc_errors + authed.stats.decoder.cobs_errors >= 1
    device.reply_filter = None
    assert (await authed.get_clock()).device_utc_ms == T0


async def test_unplug_fails_pending_request_promptly(
    authed: RecorderClient, device: Device
) -> None:
    sent = asyncio.Event()

    async def never(frame: bytes) -> bytes | None:
        sent.set()
        await asyncio.sleep(3600)
        return None

    device.reply_filter = never
    authed.timeout = 600  # the unplug, not a timeout, must end the call
    call = asyncio.create_task(authed.identity())
    await asyncio.wait_for(sent.wait(), GUARD)
    await device.unplug()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(call, GUARD)
    assert not authed.is_open
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(authed.battery(), GUARD)


async def test_unplug_while_idle(authed: RecorderClient, device: Device) -> None:
    await device.unplug()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(authed.battery(), GUARD)


async def test_open_errors(device: Device) -> None:
    with pytest.raises(LinkClosed):
        await RecorderClient.open("/dev/does-not-exist-bridge-test")
    async with await RecorderClient.open(device.pty.slave_path) as first:
        with pytest.raises(LinkClosed, match=r"exclusively|lock"):
            await RecorderClient.open(device.pty.slave_path)
        assert (await first.hello()).protocol_version == 1
    # Closed by the context manager: the port can be opened again.
    again = await RecorderClient.open(device.pty.slave_path)
    await again.close()
    with pytest.raises(LinkClosed):
        await again.hello()


async def test_malformed_or_wrong_reply_is_a_protocol_error(
    authed: RecorderClient, device: Device, recorder: MemoryRecorder
) -> None:
    async def malformed(frame: bytes) -> bytes | None:
        rid = decode_frame(frame).request_id
        return raw_frame(m.BatteryStatus.TYPE_ID, rid, b"\x01")  # CRC fine, payload short

    device.reply_filter = malformed
    recorder.calls.clear()
    with pytest.raises(ProtocolError, match="truncated"):
        await asyncio.wait_for(authed.battery(), GUARD)
    assert recorder.calls == ["battery"]  # answered, so not retried
    assert authed.stats.decoder.rejected == 1

    async def wrong_type(frame: bytes) -> bytes | None:
        return encode_frame(decode_frame(frame).request_id, m.Ok())

    device.reply_filter = wrong_type
    with pytest.raises(ProtocolError, match="answered with Ok"):
        await asyncio.wait_for(authed.storage(), GUARD)
    device.reply_filter = None
    assert (await authed.storage()).file_count == 3  # the link carries on


def test_retry_policy_matches_the_document() -> None:
    doc = DOC.read_text(encoding="utf-8")
    table = doc[doc.index("| request | idempotent | why |") :].split("\n\n")[0]
    documented: dict[str, bool] = {}
    for row in table.splitlines()[2:]:
        names, idem = (c.strip() for c in row.strip("|").split("|")[:2])
        for name in names.split(", "):
            documented[name] = idem == "yes"
    assert documented == {cls.__name__: cls.POLICY.idempotent for cls in m.REQUEST_TYPES}


async def test_concurrent_callers_are_serialised(authed: RecorderClient) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(authed.battery(), authed.storage(), authed.identity(), authed.get_clock()),
        GUARD,
    )
    assert isinstance(results[0], m.BatteryStatus)
    assert isinstance(results[1], m.StorageStatus)
    assert isinstance(results[2], m.Identity)
    assert results[3].device_utc_ms == T0
    assert authed.stats.unexpected_replies == 0 and authed.stats.retries == 0


async def test_request_lost_on_the_way_is_retried(
    authed: RecorderClient, device: Device, recorder: MemoryRecorder
) -> None:
    lost: list[bytes] = []

    def deaf_once(data: bytes) -> bytes:
        if not lost:
            lost.append(data)
            return b""
        return data

    device.server.request_filter = deaf_once
    authed.timeout = 0.3
    authed.retries = 50  # a slow machine may need more than one retry
    recorder.calls.clear()
    assert (await authed.identity()).serial == "DA000042"
    assert lost and authed.stats.retries >= 1
    assert recorder.calls.count("identity") == authed.stats.retries  # first never arrived


async def test_slow_handler_can_run_off_the_loop(recorder: MemoryRecorder) -> None:
    name = b"DCIM/100REC/V00002.MP4"
    data = recorder.files[name]
    entered, gate = threading.Event(), threading.Event()
    seen: list[tuple[bool, bool]] = []  # (off the loop thread, released by the loop)
    plain_delete = recorder.delete_recording

    def slow_delete(n: bytes, size: int, digest: bytes) -> None:
        entered.set()
        released = gate.wait(5.0)  # only the running loop can release it
        seen.append((threading.current_thread() is not threading.main_thread(), released))
        plain_delete(n, size, digest)

    recorder.delete_recording = slow_delete  # type: ignore[method-assign,assignment]
    pty = open_pty()
    server = DeviceServer(pty.master_fd, DeviceEndpoint(recorder, SECRET), handler_in_thread=True)
    task = asyncio.create_task(server.run())
    try:
        async with await RecorderClient.open(pty.slave_path, timeout=5.0) as c:
            await c.hello()
            await c.authenticate(SECRET)
            call = asyncio.create_task(
                c.delete_recording(name, len(data), blake3.blake3(data).digest())
            )
            await asyncio.wait_for(asyncio.to_thread(entered.wait, GUARD), GUARD)
            assert not call.done()
            gate.set()
            await asyncio.wait_for(call, GUARD)
        assert seen == [(True, True)] and name not in recorder.files
    finally:
        await server.aclose()
        task.cancel()
        pty.close()


async def test_a_cancelled_command_leaves_the_client_usable(
    authed: RecorderClient, device: Device
) -> None:
    async def swallow(frame: bytes) -> bytes | None:
        return None

    device.reply_filter = swallow
    sent_before = authed.stats.requests
    task = asyncio.create_task(authed.identity())
    await asyncio.wait_for(until(lambda: authed.stats.requests > sent_before), GUARD)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    device.reply_filter = None
    assert (await authed.identity()).serial == "DA000042"
