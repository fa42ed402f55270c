"""Docking sessions: one state machine and one task per docked recorder.

`BaySupervisor` (supervisor.py) consumes device events and runs a `DockingSession`
(runner.py) per recorder; `SessionMachine` (state_machine.py) is the pure state machine
the runner drives; clock.py holds the drift maths and the dock's own sync probe.
"""

from agent.dockclock import dock_clock_probe, kernel_clock_synchronised
from agent.session.context import SessionDeps
from agent.session.recorder_link import recorder_client_opener
from agent.session.runner import DockingSession
from agent.session.state_machine import IllegalTransition, SessionMachine, State, Transition
from agent.session.supervisor import BaySupervisor

__all__ = [
    "BaySupervisor", "DockingSession", "IllegalTransition", "SessionDeps", "SessionMachine",
    "State", "Transition", "dock_clock_probe", "kernel_clock_synchronised",
    "recorder_client_opener",
]
