"""Unplug in every state: work cancelled, recorder left safe, mount released, `undocked`
recorded, and no fault for the unplug itself."""

from __future__ import annotations

from typing import Any

import pytest

from agent.session.state_machine import State
from agent.settings import DeviceSettings, RecorderSettings
from hw_sim.spec import Faults

from .session_bench import Bench, Env, spec, wait_state

# Long timeouts: a silenced command keeps the session waiting in one state until unplug.
PATIENT = RecorderSettings(command_timeout_s=30.0, retries=0)

CASES: dict[str, tuple[State, Faults, dict[str, Any]]] = {
    "detected": (State.DETECTED, Faults(silent_commands=frozenset({"hello"})), {}),
    "authenticated": (State.AUTHENTICATED, Faults(silent_commands=frozenset({"identity"})),
                      {}),
    "identified": (State.IDENTIFIED, Faults(silent_commands=frozenset({"get_clock"})), {}),
    "clock_checked": (State.CLOCK_CHECKED, Faults(silent_commands=frozenset({"battery"})),
                      {}),
    "status_read": (State.STATUS_READ,
                    Faults(silent_commands=frozenset({"list_recordings"})), {}),
    "storage_unlocked": (State.STORAGE_UNLOCKED, Faults(), {"no_storage": True}),
    "offloading": (State.OFFLOADING, Faults(silent_commands=frozenset({"delete_recording"})),
                   {"wipe": True}),
    "released": (State.RELEASED, Faults(), {}),
    "failed": (State.FAILED, Faults(refuse_auth=True), {}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_unplug_in_state(env: Env, make_bench: Any, case: str) -> None:
    state, faults, opts = CASES[case]
    if opts.get("wipe"):
        env.configure_offload(wipe_after_offload=True)
    bench: Bench = await make_bench(
        recorder=PATIENT, devices=DeviceSettings(source="sim", storage_wait_s=60))
    bench.deliver_storage = not opts.get("no_storage")
    rec = await bench.plug("B1", spec("SN000020", faults=faults))
    s = bench.session("SN000020")
    await wait_state(s, state)
    files_before = sorted(p.name for p in rec.storage.root.rglob("*") if p.is_file())

    await bench.unplug("B1")

    assert s.state is State.REMOVED
    assert s.machine.history[-1].source is state
    kinds = env.kinds(s.session_id)
    assert kinds[0] == "docked" and kinds[-1] == "undocked" and kinds.count("undocked") == 1
    undocked: Any = env.entries(session_id=s.session_id, kind="undocked")[0].data
    assert undocked["state_reached"] == state.value and undocked["reason"] == "unplugged"
    assert env.mounter.mounted == set()  # nothing left mounted
    if state is State.OFFLOADING:
        assert ("unmount", "SN000020", True) in env.mounter.calls  # lazy: device is gone
    # nothing was wiped from the recorder
    assert sorted(p.name for p in rec.storage.root.rglob("*") if p.is_file()) == \
        files_before
    codes = [f.code for f in env.faults()]
    assert codes == (["auth_refused"] if state is State.FAILED else [])
    assert bench.supervisor.snapshot() == []


async def test_unplug_while_mounting(env: Env, make_bench: Any) -> None:
    """A mount still in progress when the recorder leaves is released all the same."""
    import asyncio
    from pathlib import Path

    from agent.devices.events import StorageRef

    entered = asyncio.Event()
    base_mount = env.mounter.mount

    async def slow_mount(key: str, storage: StorageRef) -> Path:
        path = await base_mount(key, storage)  # really mounted, but not yet returned
        entered.set()
        await asyncio.Event().wait()  # the helper never answers
        return path

    env.mounter.mount = slow_mount  # type: ignore[method-assign]
    bench: Bench = await make_bench(recorder=PATIENT)
    await bench.plug("B1", spec("SN000021"))
    s = bench.session("SN000021")
    await entered.wait()
    assert s.state is State.STORAGE_UNLOCKED
    await bench.unplug("B1")
    assert env.mounter.mounted == set()
    assert ("unmount", "SN000021", True) in env.mounter.calls
    assert env.kinds(s.session_id)[-1] == "undocked" and env.faults() == []
