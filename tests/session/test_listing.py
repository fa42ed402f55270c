"""The recording listing is many requests: each has its own deadline, renewed by every
page that arrives. A long listing that keeps coming completes; one that stalls times out
as one clear fault with the recorder left locked."""

from __future__ import annotations

from typing import Any

from agent.session.state_machine import State
from agent.settings import RecorderSettings
from hw_sim.spec import Faults, FootageSpec

from .session_bench import Bench, Env, spec, wait_state

ENDED = (State.RELEASED, State.FAILED)


async def test_slow_long_listing_completes(env: Env, make_bench: Any) -> None:
    # One request may take 3 s; the listing takes longer than one request's bound
    # (3 s + 1 s margin): ~15 pages held back 0.35 s each, every one of them on time.
    bench: Bench = await make_bench(recorder=RecorderSettings(command_timeout_s=3.0,
                                                              retries=0))
    footage = FootageSpec(count=800, size_bytes=512, gap_s=1.0)
    rec = await bench.plug("B1", spec("SN000094", footage=footage,
                                      faults=Faults(list_page_delay_s=0.35)))
    s = bench.session("SN000094")
    await wait_state(s, *ENDED)
    assert s.state is State.RELEASED, s.faults
    assert env.faults() == []
    assert rec.list_pages_sent >= 14
    assert s.offload_result is not None and s.offload_result.stored == 800
    # Every file's recording times came from the listing, not from file times.
    rows = env.query(lambda c: c.execute(
        "SELECT COUNT(*) FROM evidence_files WHERE rec_start_us IS NOT NULL").fetchone())
    assert rows[0] == 800


async def test_stalled_listing_still_times_out(env: Env, make_bench: Any) -> None:
    bench: Bench = await make_bench(recorder=RecorderSettings(command_timeout_s=0.5,
                                                              retries=1))
    footage = FootageSpec(count=300, size_bytes=512, gap_s=1.0)
    rec = await bench.plug("B1", spec("SN000095", footage=footage, faults=Faults(
        list_page_delay_s=0.05, list_stall_after_pages=2)))
    s = bench.session("SN000095")
    await wait_state(s, *ENDED)
    assert s.state is State.FAILED
    (f,) = env.faults()
    assert f.code == "timeout" and "list recordings" in f.reason
    assert f.detail["state"] == "status_read"
    assert rec.list_pages_sent > 2  # pages came, then the recorder went quiet
    assert rec.firmware.state.mass_storage is False and env.mounter.calls == []
