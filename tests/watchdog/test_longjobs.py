"""The long-job runner (agent.longjobs): a stop reaches a job between two units of work
and wakes it from a pause, and the runner waits for its threads to be free."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agent.longjobs import JobStopped, LongJobs, StopSignal, check, pause


async def test_a_stop_ends_a_paused_job_and_the_runner_waits_for_it() -> None:
    jobs = LongJobs(1)
    started = threading.Event()
    ended: list[str] = []

    def job(stop: StopSignal) -> int:
        started.set()
        try:
            while True:
                check(stop)
                pause(stop, 3600.0)  # a pace far below disk speed
        finally:
            ended.append("ended")



    running = asyncio.create_task(jobs.run(job))
    await asyncio.to_thread(started.wait)
    assert await jobs.stop()
    assert ended == ["ended"]
    with pytest.raises(JobStopped):
        await running
    with pytest.raises(JobStopped):  # nothing new starts once stopping
        await jobs.run(lambda stop: 1)


async def test_jobs_run_and_return_their_result() -> None:
    jobs = LongJobs(2)
    assert await jobs.run(lambda stop: 41 + (not stop.is_set())) == 42
    assert await jobs.stop()


def test_pause_without_a_stop_is_a_plain_sleep_and_check_passes() -> None:
    pause(None, 0.0)
    check(None)
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobStopped):
        pause(stop, 10.0)
