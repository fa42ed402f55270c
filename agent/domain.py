"""Small value types shared by sessions, offload, ledger and reporting."""

from __future__ import annotations

from dataclasses import dataclass


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
    identity: RecorderIdentity
    first_docking: bool  # first time this dock has seen this recorder serial
    storage_only: bool = False
