"""Is a recorder's firmware allowed (pure)? The one rule every part of the dock asks.

`[readiness] firmware_allowlist` names, per recorder model, the firmware versions the unit
has approved; a model listed there must run one of them. For models not listed the older
flat `allowed_firmware` applies (empty: any). The central service may override a model's
list (`set-firmware-policy`): `with_central_allowlists` lays those over the config, and the
identify-time fault, readiness and the `firmware_update` field all judge with the result.
Versions compare as dotted decimals (1.4 is 1.4.0). Allowlists hold only dotted decimals
(the config check and `set-firmware-policy` refuse anything else), so a recorder reporting
another text is on no list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from agent.compliance.versions import same_version
from agent.settings import ReadinessSettings


def is_listed(version: str | None, allowed: Sequence[str]) -> bool:
    return version is not None and any(version == v or same_version(version, v)
                                       for v in allowed)


def allowlist_problem(allowed: Sequence[str], model: str | None,
                      firmware: str | None) -> str | None:
    """Why `firmware` is not on a model's allowlist, or None if it is."""
    if is_listed(firmware, allowed):
        return None
    return (f"firmware {firmware!r} of model {model!r} is not on the allowlist"
            f" ({', '.join(allowed) or 'no version allowed'})")


def firmware_problem(settings: ReadinessSettings, model: str | None,
                     firmware: str | None) -> str | None:
    """Why this firmware is not allowed, or None if it is."""
    allowed = settings.firmware_allowlist.get(model or "")
    if allowed is not None:
        return allowlist_problem(allowed, model, firmware)
    if settings.allowed_firmware and not is_listed(firmware, settings.allowed_firmware):
        return f"firmware {firmware!r} not allowed"
    return None


def with_central_allowlists(settings: ReadinessSettings,
                            central: Mapping[str, Sequence[str] | None]) -> ReadinessSettings:
    """The readiness settings with the central per-model allowlists laid over the config's
    (None: the central side lifted that model's list; `allowed_firmware` then applies)."""
    if not central:
        return settings
    merged = dict(settings.firmware_allowlist)
    for model, allowed in central.items():
        if allowed is None:
            merged.pop(model, None)
        else:
            merged[model] = list(allowed)
    return replace(settings, firmware_allowlist=merged)
