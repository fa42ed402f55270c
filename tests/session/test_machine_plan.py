"""The session plan, pure: which step comes next from what the machine knows (no I/O)."""

from __future__ import annotations

import pytest

from agent.session.state_machine import IllegalStep, SessionMachine, State, Step

CONTROL_STEPS = [Step.LINK, Step.IDENTIFY, Step.CLOCK, Step.STATUS, Step.OFFLOAD,
                 Step.RELEASE, Step.BATTERY_POLL]
# the state each step leaves the machine in (what the units advance to)
REACHES = {Step.LINK: [State.AUTHENTICATED], Step.IDENTIFY: [State.IDENTIFIED],
           Step.CLOCK: [State.CLOCK_CHECKED], Step.STATUS: [State.STATUS_READ],
           Step.OFFLOAD: [State.STORAGE_UNLOCKED, State.MOUNTED, State.OFFLOADING],
           Step.RELEASE: [State.RELEASED]}


def machine(*, storage_only: bool = False,
            optional: frozenset[Step] = frozenset()) -> SessionMachine:
    return SessionMachine(bay="B1", key="SN1", now=lambda: 0.0, storage_only=storage_only,
                          optional_steps=optional)


def walk(m: SessionMachine, *, verified: bool = True, stop_at: Step | None = None
         ) -> list[Step]:
    """Run the plan as the runner does, with units that only move the state."""
    seen: list[Step] = []
    while (step := m.next_step()) is not None and step is not stop_at:
        seen.append(step)
        if step is Step.BATTERY_POLL:
            break  # runs until unplugged: never completes
        storage_only = m.plan[0] is Step.IDENTIFY_USB
        for state in REACHES.get(step, []):
            if not (storage_only and state is State.STORAGE_UNLOCKED):  # nothing to unlock
                m.advance(state)
        if step is Step.OFFLOAD:
            m.offload_settled(verified=verified)
        m.completed(step)
    return seen


def test_control_channel_plan_in_order() -> None:
    assert walk(machine()) == CONTROL_STEPS


def test_storage_only_plan_has_no_link_clock_status_or_poll() -> None:
    m = machine(storage_only=True)
    assert walk(m) == [Step.IDENTIFY_USB, Step.OFFLOAD, Step.RELEASE]
    assert m.next_step() is None and m.state is State.RELEASED


def test_firmware_update_only_when_the_dock_runs_it() -> None:
    assert Step.FIRMWARE_UPDATE not in walk(machine())
    with_update = walk(machine(optional=frozenset({Step.FIRMWARE_UPDATE})))
    assert with_update == [*CONTROL_STEPS[:-1], Step.FIRMWARE_UPDATE, Step.BATTERY_POLL]


def test_firmware_update_never_after_an_unverified_offload() -> None:
    m = machine(optional=frozenset({Step.FIRMWARE_UPDATE}))
    assert walk(m, verified=False) == CONTROL_STEPS  # skipped: footage not safely off


def test_firmware_update_never_before_the_offload() -> None:
    m = machine(optional=frozenset({Step.FIRMWARE_UPDATE}))
    m.offload_settled(verified=True)  # even if told early, its place is after release
    assert walk(m, stop_at=Step.RELEASE) == CONTROL_STEPS[:5]


def test_storage_only_never_updates_firmware() -> None:
    m = machine(storage_only=True, optional=frozenset({Step.FIRMWARE_UPDATE}))
    assert Step.FIRMWARE_UPDATE not in walk(m)


@pytest.mark.parametrize("end", [State.FAILED, State.REMOVED])
def test_no_step_after_the_session_ended(end: State) -> None:
    m = machine()
    m.advance(State.AUTHENTICATED)
    m.completed(Step.LINK)
    m.advance(end)
    assert m.next_step() is None


def test_a_step_out_of_plan_is_refused() -> None:
    m = machine()
    with pytest.raises(IllegalStep):
        m.completed(Step.CLOCK)
    m.completed(Step.LINK)
    with pytest.raises(IllegalStep):
        m.completed(Step.LINK)  # not twice
    assert m.next_step() is Step.IDENTIFY
