"""Docking sessions: one plan and one task per docked recorder.

`BaySupervisor` (supervisor.py) consumes device events and runs a `DockingSession`
(runner.py) per recorder, kept in the `SessionTable` (registry.py) everyone else reads.
`SessionMachine` (state_machine.py) is the pure state machine and plan: it names the next
`Step`; the runner executes that step's unit (steps/) on the session's `SessionContext`
(context.py: its facts, resources and common calls). clock.py holds the drift maths.
"""

from agent.session.context import SessionContext, SessionDeps, StepUnit
from agent.session.recorder_link import recorder_client_opener
from agent.session.registry import SessionTable
from agent.session.runner import DockingSession
from agent.session.state_machine import IllegalTransition, SessionMachine, State, Step, Transition
from agent.session.supervisor import BaySupervisor

__all__ = [
    "BaySupervisor", "DockingSession", "IllegalTransition", "SessionContext", "SessionDeps",
    "SessionMachine", "SessionTable", "State", "Step", "StepUnit", "Transition",
    "recorder_client_opener",
]
