"""A reporter's command actions that carry out nothing (benchmarks, reporter-only
processes): each command answers with an empty result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NoActions:
    """Actions for a reporter that carries out no commands (benchmarks, tools): each one
    answers with an empty result."""

    async def assign_officer(self, serial: str, record: Mapping[str, str]) -> dict[str, Any]:
        return {}

    async def set_hold(
        self, hold_id: str, reason: str, scope: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {}

    async def clear_hold(self, hold_id: str, reason: str) -> dict[str, Any]:
        return {}

    async def run_verify(self, deep: bool) -> dict[str, Any]:
        return {}

    async def ack_upload(self, files: list[str]) -> dict[str, Any]:
        return {}

    async def readiness_report(self) -> dict[str, Any]:
        return {}

    async def lifecycle(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    async def firmware(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    async def rebirth(self) -> None:
        return None
