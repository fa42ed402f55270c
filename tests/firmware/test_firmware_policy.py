"""The firmware decision rules (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.compliance.firmware import firmware_problem
from agent.compliance.versions import same_version, version_key
from agent.firmware import policy as pol
from agent.firmware.errors import PolicyError
from agent.settings import ReadinessSettings

PKG = pol.PackageFacts("ab" * 32, "2.1.0", ("BWC-4",), "1.5.0", None, 1000)
POLICY = pol.ModelPolicy("2.1.0", ("2.0.0", "2.1.0"))
LIMITS = pol.Limits(True, 40.0, (pol.parse_window("06:30-07:30"),), 3)
NOON = dt.time(12, 0)


def rule(allowlists: dict[str, list[str]] | None = None,
         flat: list[str] | None = None) -> pol.FirmwareRule:
    """The dock's one firmware rule (agent.compliance.firmware) over these lists."""
    settings = ReadinessSettings(firmware_allowlist=allowlists or {},
                                 allowed_firmware=flat or [])
    return lambda model, version: firmware_problem(settings, model, version)


RULE = rule({"BWC-4": ["2.0.0", "2.1.0"]})


def facts(**kw: object) -> pol.RecorderFacts:
    base: dict[str, object] = dict(serial="R1", model="BWC-4", running_version="2.0.0",
                                   battery_percent=80.0, footage_safe=True, failures={})
    base.update(kw)
    return pol.RecorderFacts(**base)  # type: ignore[arg-type]


def test_versions_compare_with_missing_parts_as_zero() -> None:
    assert version_key("1.4") == (1, 4, 0, 0)
    assert same_version("2.1", "2.1.0.0")
    assert version_key("1.4.x") is None and version_key("01.2") is None
    assert version_key("1.2.3.4.5") is None


def test_update_when_everything_allows() -> None:
    d = pol.decide(facts(), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "update" and d.package == PKG


def test_no_update_before_footage_is_safe() -> None:
    d = pol.decide(facts(footage_safe=False), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "wait" and "offloaded and verified" in d.reason


@pytest.mark.parametrize("battery", [None, 39.9, 0.0])
def test_no_update_on_low_or_unknown_battery(battery: float | None) -> None:
    d = pol.decide(facts(battery_percent=battery), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "wait" and "battery" in d.reason


@pytest.mark.parametrize(("t", "inside"), [(dt.time(6, 30), True), (dt.time(7, 29), True),
                                            (dt.time(7, 30), False), (dt.time(6, 29), False)])
def test_shift_start_window(t: dt.time, inside: bool) -> None:
    d = pol.decide(facts(), POLICY, [PKG], LIMITS, t, RULE)
    assert (d.action == "wait") is inside


def test_window_across_midnight() -> None:
    w = pol.parse_window("23:00-01:00")
    assert w.contains(dt.time(23, 30)) and w.contains(dt.time(0, 30))
    assert not w.contains(dt.time(1, 0)) and not w.contains(dt.time(22, 59))


@pytest.mark.parametrize("bad", ["6:30-7:30", "06:30", "24:00-01:00", "06:30-06:30", ""])
def test_malformed_window_is_refused(bad: str) -> None:
    with pytest.raises(PolicyError):
        pol.parse_window(bad)


def test_running_below_min_from_is_blocked_with_a_clear_reason() -> None:
    d = pol.decide(facts(running_version="1.4.9"), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "blocked" and "needs at least 1.5.0" in d.reason


def test_running_above_max_from_is_blocked() -> None:
    pkg = pol.PackageFacts("cd" * 32, "2.1.0", ("BWC-4",), None, "2.0.5", 10)
    d = pol.decide(facts(running_version="2.2.0"), POLICY, [pkg], LIMITS, NOON, RULE)
    assert d.action == "blocked" and "only over 2.0.5" in d.reason


def test_wrong_model_package_is_never_chosen() -> None:
    other = pol.PackageFacts("ef" * 32, "2.1.0", ("BWC-9",), None, None, 10)
    d = pol.decide(facts(), POLICY, [other], LIMITS, NOON, RULE)
    assert d.action == "blocked" and "no staged package" in d.reason


def test_at_target_or_no_target_does_nothing() -> None:
    d = pol.decide(facts(running_version="2.1"), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "none"
    assert pol.decide(facts(), None, [PKG], LIMITS, NOON, RULE).action == "none"


def test_repeated_failures_stop_the_retries() -> None:
    d = pol.decide(facts(failures={PKG.blake3: 3}), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "blocked" and "failed 3 times" in d.reason


def test_target_outside_allowlist_is_blocked() -> None:
    d = pol.decide(facts(), pol.ModelPolicy("2.1.0", ("2.0.0",)), [PKG], LIMITS, NOON,
                   rule({"BWC-4": ["2.0.0"]}))
    assert d.action == "blocked" and "allowlist" in d.reason


@pytest.mark.parametrize(("allowlists", "flat", "action"), [
    ({}, ["2.0.0"], "blocked"),  # the flat list alone forbids the target
    ({}, ["2.0", "2.1"], "update"),  # the flat list allows it (dotted decimals)
    ({}, [], "update"),  # no list at all: any version
    ({"BWC-4": ["2.1.0"]}, ["2.0.0"], "update"),  # the model's own list decides for it
    ({"BWC-4": ["2.0.0"]}, ["2.1.0"], "blocked"),
    ({"OTHER": ["9.0"]}, ["2.0.0"], "blocked"),  # another model's list: the flat one applies
])
def test_the_target_is_judged_by_the_one_firmware_rule(
        allowlists: dict[str, list[str]], flat: list[str], action: str) -> None:
    policy = pol.ModelPolicy("2.1.0", None)  # no per-model list in the policy itself
    d = pol.decide(facts(), policy, [PKG], LIMITS, NOON, rule(allowlists, flat))
    assert d.action == action, d
    if action == "blocked":
        assert "2.1.0" in d.reason and "not allowed" in d.reason, d


def test_central_policy_overrides_config_per_model() -> None:
    eff = pol.effective_policies({"A": "1.0", "B": "2.0"}, {"A": ["1.0"]},
                                 {"B": pol.ModelPolicy("2.5", ("2.5",), "central")})
    assert eff["A"] == pol.ModelPolicy("1.0", ("1.0",))
    assert eff["B"].target == "2.5" and eff["B"].source == "central"


def test_footage_safe_needs_a_complete_clean_offload() -> None:
    ok = {"outcome": "complete", "failed": 0, "changed": 0}
    assert pol.footage_safe(ok, [])
    assert not pol.footage_safe(None, [])
    assert not pol.footage_safe({**ok, "failed": 1}, [])
    assert not pol.footage_safe({**ok, "outcome": "interrupted"}, [])
    assert not pol.footage_safe(ok, ["verify_failed"])


def test_a_rolled_back_package_is_not_tried_again_on_that_recorder() -> None:
    d = pol.decide(facts(rolled_back=frozenset({PKG.blake3})), POLICY, [PKG], LIMITS, NOON, RULE)
    assert d.action == "blocked" and "rolled back" in d.reason
