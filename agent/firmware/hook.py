"""What a docking session hands the firmware service once its footage is safe."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.domain import RecorderIdentity
from agent.firmware.policy import footage_safe


@dataclass(frozen=True)
class DockedRecorder:
    link: object  # the session's RecorderClient; used when it speaks firmware (FirmwareLink)
    serial: str
    model: str
    firmware: str
    battery_percent: float | None
    footage_safe: bool
    bay: str
    session_id: str
    officer: str | None
    changed: Callable[[], None] = lambda: None  # the session's state changed (views refresh)


def docked_recorder(link: object, identity: RecorderIdentity,
                    battery: Mapping[str, object] | None,
                    offload_result: Mapping[str, object] | None,
                    faults: Sequence[Mapping[str, object]], *, bay: str,
                    session_id: str, changed: Callable[[], None]) -> DockedRecorder:
    percent = (battery or {}).get("percent")
    return DockedRecorder(
        link=link, serial=identity.serial, model=identity.model, firmware=identity.firmware,
        battery_percent=float(percent) if isinstance(percent, int | float) else None,
        footage_safe=footage_safe(offload_result, [str(f.get("code")) for f in faults]),
        bay=bay, session_id=session_id, officer=identity.officer_no or None, changed=changed)
