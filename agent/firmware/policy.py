"""Firmware policy and the decision whether to update one docked recorder (pure).

Per recorder model a target version and an allowlist of acceptable versions come from the
config (`[firmware] targets`, `[readiness] firmware_allowlist`); the central service may
override a model (persisted, see `agent.firmware.store`). A recorder below (or above) its
target is updated with a staged package of the target version once everything allows it:
footage offloaded and verified, battery high enough, not inside a shift-start window, the
package accepts the running version (min_from/max_from) and has not failed too often here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.compliance.versions import same_version, version_key
from agent.firmware.errors import PolicyError

# (model, version) -> why that version is not allowed, or None: agent.compliance.firmware's
# rule over the config and central lists (FirmwareService.firmware_problem)
FirmwareRule = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class ModelPolicy:
    target: str | None
    allowlist: tuple[str, ...] | None  # None: this model's versions are not restricted
    source: Literal["config", "central"] = "config"


@dataclass(frozen=True)
class PackageFacts:
    """What the decision needs of a staged package."""

    blake3: str
    version: str
    models: tuple[str, ...]
    min_from: str | None
    max_from: str | None
    size: int


@dataclass(frozen=True)
class RecorderFacts:
    serial: str
    model: str
    running_version: str
    battery_percent: float | None
    footage_safe: bool  # this docking's offload completed and verified, nothing left behind
    failures: Mapping[str, int]  # package BLAKE3 -> failed/rolled-back attempts on it
    rolled_back: frozenset[str] = frozenset()  # packages whose image failed to boot here


@dataclass(frozen=True)
class ShiftWindow:
    start: dt.time
    end: dt.time  # before start: the window spans midnight

    def contains(self, t: dt.time) -> bool:
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


@dataclass(frozen=True)
class Limits:
    auto_update: bool
    min_battery_percent: float
    windows: tuple[ShiftWindow, ...]
    max_attempts: int


Action = Literal["none", "update", "wait", "blocked"]


@dataclass(frozen=True)
class Decision:
    action: Action  # none: nothing to do; wait: later; blocked: needs a person
    reason: str
    package: PackageFacts | None = None


FOOTAGE_NOT_SAFE = "footage not yet offloaded and verified"

_WINDOW = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_window(text: str) -> ShiftWindow:
    m = _WINDOW.fullmatch(text.strip())
    if m is None:
        raise PolicyError(f"shift-start window {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if (h1, m1) == (h2, m2):
        raise PolicyError(f"shift-start window {text!r} is empty")
    return ShiftWindow(dt.time(h1, m1), dt.time(h2, m2))


def check_version(text: str, what: str) -> str:
    if version_key(text) is None:
        raise PolicyError(f"{what} {text!r} is not a dotted decimal version like 1.4.2")
    return text


def effective_policies(
    targets: Mapping[str, str], allowlists: Mapping[str, Sequence[str]],
    central: Mapping[str, ModelPolicy],
) -> dict[str, ModelPolicy]:
    """Per model: the central override if there is one, else the config."""
    out = {m: ModelPolicy(targets.get(m), tuple(allowlists[m]) if m in allowlists else None)
           for m in {*targets, *allowlists}}
    out.update(central)
    return out


def accepts(pkg: PackageFacts, running: str) -> str | None:
    """Why this package cannot be installed over `running`, or None."""
    key = version_key(running)
    if key is None:
        return f"the recorder's firmware version {running!r} is not a version"
    low = version_key(pkg.min_from) if pkg.min_from else None
    if low is not None and key < low:
        return (f"package {pkg.version} needs at least {pkg.min_from} running (the recorder"
                f" runs {running}): stage an intermediate version first")
    high = version_key(pkg.max_from) if pkg.max_from else None
    if high is not None and key > high:
        return (f"package {pkg.version} installs only over {pkg.max_from} or older (the"
                f" recorder runs {running}): a downgrade below its range")
    return None


def choose_package(model: str, target: str, packages: Sequence[PackageFacts]
                   ) -> PackageFacts | None:
    matching = [p for p in packages if model in p.models and same_version(p.version, target)]
    return matching[-1] if matching else None  # the latest staged


def decide(facts: RecorderFacts, policy: ModelPolicy | None, packages: Sequence[PackageFacts],
           limits: Limits, local_time: dt.time, rule: FirmwareRule) -> Decision:
    """What to do with one docked recorder's firmware now. `rule` says whether a version
    is allowed, exactly as the recorder itself is judged: a target it forbids (by a
    model's allowlist or the flat `allowed_firmware`) is never installed."""
    if policy is None or policy.target is None:
        return Decision("none", f"no target version for model {facts.model!r}")
    target = policy.target
    if same_version(facts.running_version, target):
        return Decision("none", f"runs the target version {target}")
    problem = rule(facts.model, target)
    if problem is not None:
        return Decision("blocked", f"target {target} is not allowed: {problem}")
    pkg = choose_package(facts.model, target, packages)
    if pkg is None:
        return Decision("blocked", f"no staged package of {target} for model {facts.model!r}")
    refusal = accepts(pkg, facts.running_version)
    if refusal is not None:
        return Decision("blocked", refusal, pkg)
    if pkg.blake3 in facts.rolled_back:
        return Decision("blocked", f"package {pkg.version} failed to boot on this recorder"
                        " (rolled back); not tried again", pkg)
    if facts.failures.get(pkg.blake3, 0) >= limits.max_attempts:
        return Decision("blocked", f"package {pkg.version} failed {facts.failures[pkg.blake3]}"
                        " times on this recorder; not tried again", pkg)
    return _when(facts, pkg, limits, local_time)


def decide_after_update_step(facts: RecorderFacts, policy: ModelPolicy | None,
                              packages: Sequence[PackageFacts], limits: Limits,
                              local_time: dt.time, rule: FirmwareRule) -> Decision:
    """`decide` for a recorder whose docking is past its update step (a policy changed
    while it is docked): an update the decision would start waits for its next docking."""
    decision = decide(facts, policy, packages, limits, local_time, rule)
    if decision.action == "update":
        return Decision("wait", f"{decision.reason} at the recorder's next docking",
                        decision.package)
    return decision


def _when(facts: RecorderFacts, pkg: PackageFacts, limits: Limits,
          local_time: dt.time) -> Decision:
    if not limits.auto_update:
        return Decision("wait", "automatic updates are off", pkg)
    if not facts.footage_safe:
        return Decision("wait", FOOTAGE_NOT_SAFE, pkg)
    if facts.battery_percent is None or facts.battery_percent < limits.min_battery_percent:
        shown = "unknown" if facts.battery_percent is None else f"{facts.battery_percent:g}%"
        return Decision("wait", f"battery {shown} below {limits.min_battery_percent:g}%", pkg)
    for w in limits.windows:
        if w.contains(local_time):
            return Decision("wait", f"inside the shift-start window {w.start:%H:%M}-"
                            f"{w.end:%H:%M}", pkg)
    return Decision("update", f"update {facts.running_version} -> {pkg.version}", pkg)


UNSAFE_FAULTS = frozenset({"read_error", "verify_failed", "file_changed", "offload_failed",
                           "dock_storage_full"})


def footage_safe(offload_result: Mapping[str, object] | None,
                 fault_codes: Sequence[str]) -> bool:
    """This docking's footage is all offloaded and verified: the offload completed, no file
    was left behind or changed, and no read or verification failed."""
    r = offload_result or {}
    return (r.get("outcome") == "complete" and not r.get("failed") and not r.get("changed")
            and not UNSAFE_FAULTS.intersection(fault_codes))
