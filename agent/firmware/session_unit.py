"""The docking session's firmware-update step: hands the firmware service what it needs
once the session's plan reaches Step.FIRMWARE_UPDATE (after a complete, verified offload
and the release of the recorder's storage)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent.firmware.hook import DockedRecorder, docked_recorder
from agent.session.context import SessionContext


class FirmwareUpdateUnit:
    """`StepUnit` for Step.FIRMWARE_UPDATE. The service decides (policy) and updates;
    an unplug cancels the step and the next docking resumes the transfer."""

    def __init__(self, after_offload: Callable[[DockedRecorder], Awaitable[None]]) -> None:
        self._after_offload = after_offload

    async def run(self, ctx: SessionContext) -> None:
        facts = ctx.facts
        battery, result = facts.battery, facts.offload_result
        await self._after_offload(docked_recorder(
            ctx.require_link(), ctx.require_identity(),
            battery.as_record() if battery is not None else None,
            result.as_record() if result is not None else None,
            [f.as_record() for f in facts.faults],
            bay=ctx.bay, session_id=ctx.session_id, changed=ctx.changed))
