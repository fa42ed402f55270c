"""The docking-session state machine: pure, no I/O.

One machine per docked recorder. The runner (`agent.session.runner`) performs the I/O and
asks the machine to advance; the machine refuses any step that is not in the table below,
so a bug in the runner cannot, say, offload a recorder that was never identified.

    detected -> authenticated -> identified -> clock_checked -> status_read
             -> storage_unlocked -> mounted -> offloading -> released
    detected -> mounted                       (storage-only recorder: no control channel)
    any non-terminal state -> failed | removed
    failed -> removed                         (a failed recorder still leaves the bay)

Every accepted step returns a `Transition` stamped with time, bay, recorder serial and
officer (once known) - the session's audit trail and the source of its state reports.

The machine is also the session's plan (the h11 way: it decides, the runner does):
`next_step()` names the next unit of work from what the machine knows - storage-only or
not, which steps completed, whether the offload was complete and verified, which optional
steps this dock runs - and the runner executes it and reports back with `completed()`.

    link -> identify -> clock -> status -> offload -> release
         [-> firmware_update]  (optional; only after a complete, verified offload)
         -> battery_poll       (until unplugged)
    storage-only: identify_usb -> offload -> release
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.Enum):
    DETECTED = "detected"
    AUTHENTICATED = "authenticated"
    IDENTIFIED = "identified"
    CLOCK_CHECKED = "clock_checked"
    STATUS_READ = "status_read"  # battery and storage read
    STORAGE_UNLOCKED = "storage_unlocked"  # mass storage switched on, waiting for it
    MOUNTED = "mounted"  # mounted read-only
    OFFLOADING = "offloading"
    RELEASED = "released"  # offload done, unmounted, locked, left docked charging
    FAILED = "failed"  # a fault stopped the session; recorder left safe, still docked
    REMOVED = "removed"  # left the bay; terminal

    @property
    def terminal(self) -> bool:
        return self is State.REMOVED


_FORWARD: dict[State, frozenset[State]] = {
    State.DETECTED: frozenset({State.AUTHENTICATED, State.MOUNTED}),
    State.AUTHENTICATED: frozenset({State.IDENTIFIED}),
    State.IDENTIFIED: frozenset({State.CLOCK_CHECKED}),
    State.CLOCK_CHECKED: frozenset({State.STATUS_READ}),
    State.STATUS_READ: frozenset({State.STORAGE_UNLOCKED}),
    State.STORAGE_UNLOCKED: frozenset({State.MOUNTED}),
    State.MOUNTED: frozenset({State.OFFLOADING}),
    State.OFFLOADING: frozenset({State.RELEASED}),
    State.RELEASED: frozenset(),
    State.FAILED: frozenset(),
    State.REMOVED: frozenset(),
}


def allowed_targets(state: State) -> frozenset[State]:
    """Every state `state` may move to."""
    if state is State.REMOVED:
        return frozenset()
    if state is State.FAILED:
        return frozenset({State.REMOVED})
    return _FORWARD[state] | {State.FAILED, State.REMOVED}


class Step(enum.Enum):
    """A unit of a docking session's work (agent.session.steps executes each)."""

    LINK = "link"  # open the control channel, hello, authenticate
    IDENTIFY = "identify"  # identity, officer, identity policy, the recorder's event log
    IDENTIFY_USB = "identify_usb"  # storage-only: the USB serial is all there is
    CLOCK = "clock"  # measure drift, set the clock, file the event log on the dock clock
    STATUS = "status"  # battery and storage status
    OFFLOAD = "offload"  # list, unlock, mount read-only, offload, unmount
    RELEASE = "release"  # lock storage again, apply a pending officer assignment
    FIRMWARE_UPDATE = "firmware_update"  # optional: only after a complete, verified offload
    BATTERY_POLL = "battery_poll"  # released and charging: watch the battery until unplugged


CONTROL_PLAN = (Step.LINK, Step.IDENTIFY, Step.CLOCK, Step.STATUS, Step.OFFLOAD,
                Step.RELEASE, Step.FIRMWARE_UPDATE, Step.BATTERY_POLL)
STORAGE_ONLY_PLAN = (Step.IDENTIFY_USB, Step.OFFLOAD, Step.RELEASE)
# Steps that run only when the dock provides them (a unit is configured for them).
OPTIONAL_STEPS = frozenset({Step.FIRMWARE_UPDATE})
# Steps that must find the offload complete and verified, or are skipped.
AFTER_VERIFIED_OFFLOAD = frozenset({Step.FIRMWARE_UPDATE})


class IllegalTransition(Exception):
    """The runner asked for a step the state machine does not allow."""

    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"illegal session transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class Transition:
    """One accepted step of a docking session."""

    at: float  # dock wall time, seconds since the epoch
    bay: str
    key: str
    serial: str | None  # None until identified (storage-only: the USB serial from the start)
    officer_no: str | None  # None until known
    source: State
    target: State
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "bay": self.bay,
            "key": self.key,
            "serial": self.serial,
            "officer_no": self.officer_no,
            "from": self.source.value,
            "to": self.target.value,
            "reason": self.reason,
        }


class SessionMachine:
    """The state of one docking session; `advance()` is the only way to change it."""

    def __init__(
        self,
        *,
        bay: str,
        key: str,
        serial: str | None = None,
        now: Callable[[], float] = time.time,
        storage_only: bool = False,
        optional_steps: frozenset[Step] = frozenset(),
    ) -> None:
        self.bay = bay
        self.key = key
        self.serial = serial
        self.officer_no: str | None = None
        self._now = now
        self._state = State.DETECTED
        self.history: list[Transition] = []
        plan = STORAGE_ONLY_PLAN if storage_only else CONTROL_PLAN
        self.plan: tuple[Step, ...] = tuple(
            s for s in plan if s not in OPTIONAL_STEPS or s in optional_steps)
        self.completed_steps: list[Step] = []
        self.offload_verified = False

    @property
    def state(self) -> State:
        return self._state

    def identify(self, serial: str, officer_no: str | None) -> None:
        """Attach the recorder serial and officer; later transitions carry them."""
        self.serial = serial
        self.officer_no = officer_no or None

    def can_advance(self, target: State) -> bool:
        return target in allowed_targets(self._state)

    def advance(self, target: State, reason: str = "") -> Transition:
        """Move to `target` or raise `IllegalTransition`; returns the recorded step."""
        if not self.can_advance(target):
            raise IllegalTransition(self._state, target)
        step = Transition(
            at=self._now(),
            bay=self.bay,
            key=self.key,
            serial=self.serial,
            officer_no=self.officer_no,
            source=self._state,
            target=target,
            reason=reason,
        )
        self._state = target
        self.history.append(step)
        return step

    # --- the plan ------------------------------------------------------------------------

    def next_step(self) -> Step | None:
        """The next unit of work, or None when the session's work is over (failed, removed,
        or every step of the plan done)."""
        if self._state in (State.FAILED, State.REMOVED):
            return None
        for step in self.plan:
            if step in self.completed_steps:
                continue
            if step in AFTER_VERIFIED_OFFLOAD and not self.offload_verified:
                continue  # never touch a recorder whose footage is not safely off
            return step
        return None

    def completed(self, step: Step) -> None:
        """The runner finished `step`; refuses a step that was not the one planned."""
        if step is not self.next_step():
            raise IllegalStep(step, self.next_step())
        self.completed_steps.append(step)

    def offload_settled(self, *, verified: bool) -> None:
        """The offload ended: `verified` when every file is stored, verified and nothing
        is left behind (the condition for steps that may change the recorder)."""
        self.offload_verified = verified


class IllegalStep(Exception):
    """The runner reported a step the plan did not ask for."""

    def __init__(self, step: Step, planned: Step | None) -> None:
        super().__init__(f"step {step.value} completed but {planned.value if planned else 'none'}"
                         " was planned")
        self.step = step
        self.planned = planned
