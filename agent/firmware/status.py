"""This dock's recorders against firmware policy, with transfers in flight (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.compliance.versions import same_version
from agent.firmware import policy as pol
from agent.firmware.store import Attempt, StagedPackage
from agent.firmware.updater import Progress


@dataclass(frozen=True)
class DockedFacts:
    bay: str
    serial: str
    model: str
    firmware: str
    # this docking's footage is offloaded and verified (None: the offload has not ended);
    # the session runs the update step only when it is
    footage_safe: bool | None = None
    session_id: str = ""  # the docking's: a decision belongs to one docking


# (model, firmware) -> why it is not allowed, or None, as readiness judges it
FirmwareRule = pol.FirmwareRule


def recorder_firmware(d: DockedFacts, policies: Mapping[str, pol.ModelPolicy],
                      decision: pol.Decision | None, progress: Progress | None,
                      attempt: Attempt | None, rule: FirmwareRule) -> dict[str, object]:
    """The per-recorder `firmware_update` field (dockctl, MQTT recorder state)."""
    p = policies.get(d.model)
    target = p.target if p is not None else None
    allowed = rule(d.model, d.firmware) is None
    if progress is not None:
        state = "transferring"
    elif target is None:
        state = "no_target"
    elif same_version(d.firmware, target):
        state = "current"
    elif d.footage_safe is False:  # the session never reaches its update step
        state, decision = "waiting", pol.Decision("wait", pol.FOOTAGE_NOT_SAFE)
    elif decision is not None:
        state = {"update": "updating", "wait": "waiting", "blocked": "blocked",
                 "none": "current"}[decision.action]
    else:
        state = "pending"
    return {
        "running": d.firmware, "target": target, "allowed": allowed, "state": state,
        "reason": decision.reason if decision is not None else None,
        "policy_source": p.source if p is not None else None,
        "progress": progress.as_dict() if progress is not None else None,
        "attempt": attempt.as_dict() if attempt is not None else None,
    }


def status_report(docked: Sequence[DockedFacts], policies: Mapping[str, pol.ModelPolicy],
                  decisions: Mapping[str, pol.Decision], in_flight: Mapping[str, Progress],
                  open_attempts: Sequence[Attempt], packages: Sequence[StagedPackage],
                  rule: FirmwareRule) -> dict[str, object]:
    attempts = {a.recorder: a for a in open_attempts}
    return {
        "recorders": [{"bay": d.bay, "serial": d.serial, "model": d.model,
                       **recorder_firmware(d, policies, decisions.get(d.serial),
                                           in_flight.get(d.serial), attempts.get(d.serial),
                                           rule)}
                      for d in docked],
        "policies": {m: {"target": p.target,
                         "allowlist": list(p.allowlist) if p.allowlist is not None else None,
                         "source": p.source} for m, p in sorted(policies.items())},
        "packages": [p.as_dict() for p in packages],
        "open_attempts": [a.as_dict() for a in open_attempts],
    }


def docked_from_snapshots(snaps: Sequence[Mapping[str, object]]) -> list[DockedFacts]:
    """The identified recorders among the bays' session snapshots."""
    return [DockedFacts(str(s.get("bay") or ""), str(s["serial"]), str(s.get("model") or ""),
                        str(s.get("firmware") or ""), _footage_safe(s),
                        str(s.get("session_id") or ""))
            for s in snaps if s.get("serial") and not s.get("storage_only")]


def _footage_safe(snap: Mapping[str, object]) -> bool | None:
    result, faults = snap.get("offload_result"), snap.get("faults")
    if not isinstance(result, Mapping):
        return None
    codes = [str(f.get("code")) for f in faults if isinstance(f, Mapping)] \
        if isinstance(faults, list) else []
    return pol.footage_safe(result, codes)


PUBLIC_PROGRESS = ("to_version", "bytes_sent", "durable_offset", "size", "percent", "rate_bps",
                   "resumed_from")


def public_field(field: Mapping[str, object]) -> dict[str, object]:
    """The recorder state's `firmware_update` on MQTT (docs/mqtt.md): no attempt internals."""
    progress = field.get("progress")
    return {"running": field["running"], "target": field["target"], "allowed": field["allowed"],
            "state": field["state"], "reason": field["reason"],
            "progress": ({k: progress[k] for k in PUBLIC_PROGRESS}
                         if isinstance(progress, Mapping) else None)}
