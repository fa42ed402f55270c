"""The step units of a docking session: one module per step of the plan
(`agent.session.state_machine.Step`). Each unit has `async run(ctx)`; the runner executes
whichever unit the machine names next.

Adding a step: a `Step` member and its place in the plan (state_machine.py), a unit here
(built in) or in `SessionDeps.optional_units` (optional, e.g. the firmware update)."""

from __future__ import annotations

from agent.session.context import StepUnit
from agent.session.state_machine import Step
from agent.session.steps.battery_poll import BatteryPollUnit
from agent.session.steps.clock_check import ClockUnit
from agent.session.steps.identify import IdentifyUnit, UsbIdentifyUnit
from agent.session.steps.link import LinkUnit
from agent.session.steps.offload import OffloadUnit
from agent.session.steps.release import ReleaseUnit
from agent.session.steps.status import StatusUnit

BUILT_IN: dict[Step, StepUnit] = {
    Step.LINK: LinkUnit(),
    Step.IDENTIFY: IdentifyUnit(),
    Step.IDENTIFY_USB: UsbIdentifyUnit(),
    Step.CLOCK: ClockUnit(),
    Step.STATUS: StatusUnit(),
    Step.OFFLOAD: OffloadUnit(),
    Step.RELEASE: ReleaseUnit(),
    Step.BATTERY_POLL: BatteryPollUnit(),
}


def units(optional: dict[Step, StepUnit]) -> dict[Step, StepUnit]:
    """The units of every step a session of this dock may plan."""
    return {**BUILT_IN, **optional}
