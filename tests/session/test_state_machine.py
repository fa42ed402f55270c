"""The docking-session state machine: every legal step, every illegal one, exits anywhere."""

from __future__ import annotations

import itertools

import pytest

from agent.session.state_machine import (
    IllegalTransition,
    SessionMachine,
    State,
    allowed_targets,
)

MAIN_PATH = [
    State.AUTHENTICATED,
    State.IDENTIFIED,
    State.CLOCK_CHECKED,
    State.STATUS_READ,
    State.STORAGE_UNLOCKED,
    State.MOUNTED,
    State.OFFLOADING,
    State.RELEASED,
]

LEGAL_FORWARD = {
    (State.DETECTED, State.AUTHENTICATED),
    (State.DETECTED, State.MOUNTED),
    (State.AUTHENTICATED, State.IDENTIFIED),
    (State.IDENTIFIED, State.CLOCK_CHECKED),
    (State.CLOCK_CHECKED, State.STATUS_READ),
    (State.STATUS_READ, State.STORAGE_UNLOCKED),
    (State.STORAGE_UNLOCKED, State.MOUNTED),
    (State.MOUNTED, State.OFFLOADING),
    (State.OFFLOADING, State.RELEASED),
}


def _legal(a: State, b: State) -> bool:
    if a is State.REMOVED:
        return False
    if a is State.FAILED:
        return b is State.REMOVED
    return (a, b) in LEGAL_FORWARD or b in (State.FAILED, State.REMOVED)


def machine_in(state: State) -> SessionMachine:
    """A machine driven to `state` through legal steps only."""
    m = SessionMachine(bay="B1", key="K1", now=itertools.count(1000).__next__)
    if state is State.DETECTED:
        return m
    if state is State.FAILED:
        m.advance(State.FAILED, "test")
        return m
    if state is State.REMOVED:
        m.advance(State.REMOVED, "test")
        return m
    for s in MAIN_PATH:
        m.advance(s)
        if s is State.AUTHENTICATED:
            m.identify("SN000001", "4711")
        if s is state:
            return m
    raise AssertionError(state)


def test_main_path_records_every_step_with_time_bay_serial_officer() -> None:
    m = SessionMachine(bay="B3", key="USB1", now=itertools.count(100).__next__)
    steps = []
    for target in MAIN_PATH:
        steps.append(m.advance(target, reason=target.value))
        if target is State.AUTHENTICATED:
            m.identify("SN123456", "0815")
    assert m.state is State.RELEASED
    assert [s.target for s in steps] == MAIN_PATH
    assert [s.source for s in steps] == [State.DETECTED, *MAIN_PATH[:-1]]
    assert [s.at for s in steps] == list(range(100, 100 + len(MAIN_PATH)))
    assert all(s.bay == "B3" and s.key == "USB1" for s in steps)
    assert steps[0].serial is None and steps[0].officer_no is None
    assert all(s.serial == "SN123456" and s.officer_no == "0815" for s in steps[1:])
    assert m.history == steps
    assert steps[-1].as_dict()["to"] == "released"


def test_storage_only_path() -> None:
    m = SessionMachine(bay="B1", key="USBSERIAL", serial="USBSERIAL")
    for s in (State.MOUNTED, State.OFFLOADING, State.RELEASED, State.REMOVED):
        m.advance(s)
    assert m.state is State.REMOVED
    assert m.history[0].serial == "USBSERIAL"


@pytest.mark.parametrize("source", list(State))
@pytest.mark.parametrize("target", list(State))
def test_transition_table(source: State, target: State) -> None:
    m = machine_in(source)
    assert m.state is source
    before = list(m.history)
    if _legal(source, target):
        step = m.advance(target)
        assert m.state is target and step.source is source and step.target is target
        assert m.history == [*before, step]
    else:
        with pytest.raises(IllegalTransition) as info:
            m.advance(target)
        assert info.value.current is source and info.value.target is target
        assert m.state is source and m.history == before  # a refused step changes nothing


@pytest.mark.parametrize("source", [s for s in State if s is not State.REMOVED])
def test_removed_reachable_from_every_live_state(source: State) -> None:
    assert State.REMOVED in allowed_targets(source)


@pytest.mark.parametrize("source", [s for s in State if s not in (State.REMOVED, State.FAILED)])
def test_failed_reachable_from_every_working_state(source: State) -> None:
    m = machine_in(source)
    m.advance(State.FAILED, "boom")
    assert m.history[-1].reason == "boom"
    m.advance(State.REMOVED)
    assert m.state.terminal


def test_no_state_can_go_backwards_or_repeat() -> None:
    for s in State:
        assert s not in allowed_targets(s)
    assert allowed_targets(State.REMOVED) == frozenset()
