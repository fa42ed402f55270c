"""A recorder's read rate limit (USB 2.0): the pacing arithmetic with a fake clock, and a
throttled recorder whose FUSE view still serves every byte unchanged. Time is never
asserted: the pacer's waits are computed from a clock the test controls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hw_sim.errors import SimError, SpecError
from hw_sim.footage import content, footage_files
from hw_sim.spec import Faults
from hw_sim.storage import ReadPacer

from .sim_helpers import OpenClient, StartRecorder, needs_fuse, small_spec
from .test_sim_faultfs import read_all, unlocked


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_reads_are_paced_to_the_rate() -> None:
    clock = FakeClock()
    pacer = ReadPacer(1_000_000.0, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        pacer.pace(100_000)
    assert clock.now == pytest.approx(101.0)  # 1 MB at 1 MB/s
    assert clock.slept == pytest.approx([0.1] * 10)


def test_idle_time_is_not_saved_up_as_a_burst() -> None:
    clock = FakeClock()
    pacer = ReadPacer(1_000_000.0, clock=clock, sleep=clock.sleep)
    pacer.pace(100_000)
    clock.now += 60.0  # the link sat idle for a minute
    pacer.pace(500_000)
    assert clock.slept[-1] == pytest.approx(0.5)


def test_the_device_s_own_read_time_overlaps_the_link_time() -> None:
    clock = FakeClock()
    pacer = ReadPacer(1_000_000.0, clock=clock, sleep=clock.sleep)
    slot_end = pacer.book(100_000)  # the request arrives: 0.1 s of link time is booked
    clock.now += 0.03  # the device takes 0.03 s to fetch the bytes
    pacer.wait(slot_end)
    assert clock.slept == pytest.approx([0.07])  # not 0.03 + 0.1
    clock.now += 0.5  # a read that takes longer than its slot is not made to wait more
    pacer.wait(pacer.book(100_000) - 0.2)
    assert clock.slept == pytest.approx([0.07])


def test_concurrent_readers_share_one_link() -> None:
    clock = FakeClock()
    lock = threading.Lock()
    waits: list[float] = []

    def sleep(s: float) -> None:
        with lock:
            waits.append(s)

    pacer = ReadPacer(1_000_000.0, clock=clock, sleep=sleep)
    threads = [threading.Thread(target=pacer.pace, args=(250_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the clock stood still: the readers queued behind each other on the one link
    assert sorted(waits) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(SimError):
        ReadPacer(0.0)
    with pytest.raises(SpecError):
        Faults(read_rate_mb_s=0.0)
    assert Faults(read_rate_mb_s=35.0).needs_fuse


@needs_fuse
async def test_a_throttled_recorder_serves_every_byte(
    start_recorder: StartRecorder, open_client: OpenClient
) -> None:
    spec = small_spec(faults=Faults(read_rate_mb_s=50.0, read_rate_by="fuse"))
    rec = await start_recorder(spec)
    assert rec.storage.volume is None  # the FUSE view paces, not the kernel
    media = await unlocked(rec, open_client)
    for f in footage_files(spec)[:2]:
        data, err = await asyncio.to_thread(read_all, media / f.path_str)
        assert err is None and data == content(f, 0, f.size)
