"""Small value types shared by sessions, offload, ledger and reporting."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RecorderIdentity:
    """Who a docked recorder is and whom it is assigned to (from the firmware, or unknown)."""

    serial: str  # device serial (8 chars on the wire); storage-only recorders: USB serial
    model: str = ""
    hardware_rev: str = ""
    firmware: str = ""
    officer_no: str = ""  # empty when unassigned
    officer_name: str = ""
    unit_no: str = ""
    unit_name: str = ""


@dataclass(frozen=True, slots=True)
class DockingContext:
    """Everything the offloader and ledger need to know about the current docking."""

    session_id: str  # uuid4 hex, one per docking
    bay: str
    identity: RecorderIdentity  # as read at docking, before any new officer assignment
    first_docking: bool  # first time this dock has seen this recorder serial
    storage_only: bool = False
    # Base-name pattern whose group `officer` is the officer number a recorder stamps into
    # each file (RecorderSettings.officer_in_name); None: names carry no officer.
    officer_in_name: re.Pattern[str] | None = None

    def identity_for(self, relpath: bytes) -> RecorderIdentity:
        """Whom one file belongs to: the officer its name carries, else the docking's."""
        officer = officer_in_name(self.officer_in_name, relpath)
        ident = self.identity
        if officer is None or officer == ident.officer_no:
            return ident
        # Only the number is known: the name and unit read at docking are someone else's
        # (the unit is the recorder's, which stays).
        return replace(ident, officer_no=officer, officer_name="")


def officer_in_name(pattern: re.Pattern[str] | None, relpath: bytes) -> str | None:
    """The officer number stamped into a file's base name, if the pattern finds a usable
    one (1..7 printable bytes, as the recorder's officer record holds)."""
    if pattern is None:
        return None
    base = relpath.rsplit(b"/", 1)[-1].decode("utf-8", "surrogateescape")
    m = pattern.search(base)
    if m is None:
        return None
    try:
        officer = m.group("officer")
    except IndexError:
        return None
    if not officer or not officer.isprintable() or not officer.isascii() or len(officer) > 7:
        return None
    return officer
