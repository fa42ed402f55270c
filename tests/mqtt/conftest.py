"""Fixtures of the MQTT tests: the broker, PKI, central client and database come from
tests/conftest.py (this suite's database has the reporter's tables only); here a recording
implementation of the agent's command actions."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from agent.mqtt import SCHEMAS
from agent.mqtt.errors import CommandRejected


@pytest.fixture
def db_schemas() -> Sequence[str]:
    return SCHEMAS  # the reporter's tables only


class RecordingActions:
    """The agent's side of commands, recording what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.officers: dict[str, dict[str, str]] = {}
        self.holds: dict[str, dict[str, Any]] = {}
        self.known_serials = {"REC00001", "REC00002"}

    async def assign_officer(self, serial: str, record: Mapping[str, str]) -> dict[str, Any]:
        self.calls.append(("assign_officer", (serial, dict(record))))
        if serial not in self.known_serials:
            raise CommandRejected(f"recorder {serial} is not known to this dock")
        self.officers[serial] = dict(record)
        return {"assignment_id": len(self.officers), "recorder": serial, "applied": True,
                "pending": False}

    async def set_hold(self, hold_id: str, reason: str,
                       scope: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("set_hold", (hold_id, reason, dict(scope))))
        self.holds[hold_id] = {"reason": reason, "scope": dict(scope)}
        return {"hold_id": hold_id, "files_held": 3}

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]:
        self.calls.append(("clear_hold", (hold_id, reason)))
        if hold_id not in self.holds:
            raise CommandRejected(f"no hold {hold_id}")
        del self.holds[hold_id]
        return {"hold_id": hold_id, "files_released": 3}

    async def run_verify(self, deep: bool) -> dict[str, Any]:
        self.calls.append(("run_verify", deep))
        await asyncio.sleep(0)
        return {"ok": True, "deep": deep, "entries_checked": 10, "files_checked": 4,
                "problems": []}

    async def readiness_report(self) -> dict[str, Any]:
        self.calls.append(("readiness_report", None))
        return {"dock_id": "dock-A", "time": "2026-11-23T08:00:00.000Z", "recorders": [
            {"bay": "1", "serial": "REC00001", "officer": "0042", "officer_name": "Li Wei",
             "verdict": "READY", "reasons": [], "eta_s": None}]}

    async def ack_upload(self, files: list[str]) -> dict[str, Any]:
        self.calls.append(("ack_upload", list(files)))
        return {"acknowledged": len(files)}

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("lifecycle", (name, dict(args))))
        return {}

    async def firmware(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("firmware", (name, dict(args))))
        return {}

    async def rebirth(self) -> None:
        self.calls.append(("rebirth", None))


@pytest.fixture
def actions() -> RecordingActions:
    return RecordingActions()
