"""The table of docking sessions: written by the bay supervisor, read by everyone else.

It exists before the supervisor (which needs the running task group) so the view, the
command actions and health can be given it when they are built: nothing is attached to
them afterwards.
"""

from __future__ import annotations

import logging

from agent.docking_state import OffloadResult, SessionSnapshot
from agent.session.runner import DockingSession

log = logging.getLogger(__name__)


class SessionTable:
    """The newest docking session per attachment key."""

    def __init__(self) -> None:
        self._sessions: dict[str, DockingSession] = {}

    def put(self, session: DockingSession) -> None:
        self._sessions[session.key] = session

    def session(self, key: str) -> DockingSession | None:
        """The newest session for `key` (finished or not)."""
        return self._sessions.get(key)

    def live(self, key: str, bay: str | None = None) -> DockingSession | None:
        """The live session of `key` (in `bay`, if given)."""
        s = self._sessions.get(key)
        if s is None or s.finished or (bay is not None and s.bay != bay):
            return None
        return s

    def live_keys(self) -> set[str]:
        return {k for k, s in self._sessions.items() if not s.finished}

    def docked(self, serial: str) -> DockingSession | None:
        """The live session of the recorder with this device serial, if it is docked."""
        for s in reversed(list(self._sessions.values())):
            if not s.finished and s.identity is not None and s.identity.serial == serial:
                return s
        return None

    async def apply_pending_assignment(self, serial: str) -> bool:
        """Write a pending officer assignment to the recorder now, if it is docked (and its
        footage is off); True if it was written and read back."""
        session = self.docked(serial)
        return session is not None and await session.apply_pending_assignment()

    async def firmware_policy_changed(self) -> None:
        """Judge every docked recorder's firmware by the new policy now, not at its next
        docking (one session's trouble does not keep the others from it)."""
        for s in [s for s in self._sessions.values() if not s.finished]:
            try:
                await s.firmware_policy_changed()
            except Exception:  # a store error is the session's, logged; the rest go on
                log.exception("bay %s: firmware policy re-check failed", s.bay)

    def snapshot(self) -> list[SessionSnapshot]:
        """One snapshot per bay with a live session, sorted by bay label."""
        by_bay: dict[str, DockingSession] = {}
        for s in self._sessions.values():
            if not s.finished:
                by_bay[s.bay] = s  # newest wins (dict order is start order)
        return [by_bay[b].snapshot() for b in sorted(by_bay)]

    def offload_states(self) -> list[tuple[str, str, str, OffloadResult | None]]:
        """(key, session id, state, offload result) of each live session: cheap enough for
        every change."""
        return [(s.key, s.session_id, s.state.value, s.offload_result)
                for s in self._sessions.values() if not s.finished]

    def milestones(self) -> list[tuple[str, str, str, bool, bool]]:
        """(key, session id, state, offload begun copying, offload result known) of each
        live session: what makes the view publish at once rather than coalesced."""
        out = []
        for s in self._sessions.values():
            if not s.finished:
                progress = s.progress
                out.append((s.key, s.session_id, s.state.value,
                            progress is not None and progress.bytes_done > 0,
                            s.offload_result is not None))
        return out
