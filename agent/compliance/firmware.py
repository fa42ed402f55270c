"""Is a recorder's firmware allowed (pure)?

`[readiness] firmware_allowlist` names, per recorder model, the firmware versions the unit
has approved; a model listed there must run one of them. For models not listed the older
flat `allowed_firmware` applies (empty: any). Firmware updates build on this list.
"""

from __future__ import annotations

from agent.settings import ReadinessSettings


def firmware_problem(settings: ReadinessSettings, model: str | None,
                     firmware: str | None) -> str | None:
    """Why this firmware is not allowed, or None if it is."""
    allowed = settings.firmware_allowlist.get(model or "")
    if allowed is not None:
        if firmware in allowed:
            return None
        return (f"firmware {firmware!r} of model {model!r} is not on the allowlist"
                f" ({', '.join(allowed) or 'no version allowed'})")
    if settings.allowed_firmware and firmware not in settings.allowed_firmware:
        return f"firmware {firmware!r} not allowed"
    return None
