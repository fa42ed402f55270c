from dataclasses import replace

import pytest

from agent.compliance.firmware import with_central_allowlists
from agent.compliance.readiness import (
    GB,
    BatterySample,
    RecorderFacts,
    Verdict,
    charge_rate_per_s,
    evaluate,
    required_free_bytes,
)
from agent.settings import ReadinessSettings

SETTINGS = ReadinessSettings()  # 90 %, 8 GB, officer required
GOOD = RecorderFacts(
    battery_percent=95,
    free_bytes=20 * GB,
    clock_checked=True,
    clock_drift_ms=12,
    offload_complete=True,
    firmware="2.1.0",
    officer_no="0012345",
)


def codes(facts: RecorderFacts, settings: ReadinessSettings = SETTINGS) -> list[str]:
    return [r.code for r in evaluate(facts, settings, tolerance_ms=1000).reasons]


def test_all_good_is_ready() -> None:
    result = evaluate(GOOD, SETTINGS, tolerance_ms=1000)
    assert result.verdict is Verdict.READY and result.reasons == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"battery_percent": 89.9}, ["battery_low"]),
        ({"battery_percent": None}, ["battery_unknown"]),
        ({"battery_failed": True}, ["battery_failed"]),
        ({"free_bytes": 8 * GB - 1}, ["storage_low"]),
        ({"free_bytes": None}, ["storage_unknown"]),
        ({"clock_checked": False}, ["clock_unchecked"]),
        ({"clock_drift_ms": 1001}, ["clock_drift"]),
        ({"clock_drift_ms": -1001}, ["clock_drift"]),
        ({"offload_complete": False, "files_pending": 3}, ["offload_pending"]),
        ({"officer_no": ""}, ["no_officer"]),
        ({"open_faults": ["clock_not_set"]}, ["open_fault"]),
        ({"battery_percent": 50, "free_bytes": 0, "officer_no": None},
         ["battery_low", "storage_low", "no_officer"]),
    ],
)
def test_each_failing_criterion_is_named(change: dict[str, object], expected: list[str]) -> None:
    facts = replace(GOOD, **change)  # type: ignore[arg-type]
    result = evaluate(facts, SETTINGS, tolerance_ms=1000)
    assert result.verdict is Verdict.NOT_READY
    assert [r.code for r in result.reasons] == expected


def test_boundaries_are_inclusive() -> None:
    assert codes(replace(GOOD, battery_percent=90, free_bytes=8 * GB, clock_drift_ms=1000)) == []


def test_firmware_allowlist_only_when_configured() -> None:
    assert codes(replace(GOOD, firmware="9.9")) == []
    strict = replace(SETTINGS, allowed_firmware=["2.1.0"])
    assert codes(replace(GOOD, firmware="9.9"), strict) == ["firmware_not_allowed"]
    assert codes(GOOD, strict) == []


@pytest.mark.parametrize("state", ["updating", "transferring"])
def test_a_firmware_update_in_progress_is_never_ready(state: str) -> None:
    result = evaluate(replace(GOOD, firmware_state=state), SETTINGS, tolerance_ms=1000)
    assert result.verdict is Verdict.NOT_READY
    assert [r.code for r in result.reasons] == ["firmware_updating"]
    assert "do not unplug" in result.reasons[0].message
    # nor CHARGING: the battery is not the only thing missing
    charging = replace(GOOD, firmware_state=state, battery_percent=50, charging=True)
    assert evaluate(charging, SETTINGS, tolerance_ms=1000).verdict is Verdict.NOT_READY
    for idle in ("no_target", "current", "pending", "waiting", "blocked", None):
        assert codes(replace(GOOD, firmware_state=idle)) == []


def test_firmware_versions_compare_as_dotted_decimals() -> None:
    listed = replace(SETTINGS, firmware_allowlist={"M1": ["2.1"]}, allowed_firmware=["V2b"])
    assert codes(replace(GOOD, model="M1", firmware="2.1.0"), listed) == []
    assert codes(replace(GOOD, model="M1", firmware="2.1.1"), listed) == ["firmware_not_allowed"]
    assert codes(replace(GOOD, model="M2", firmware="V2b"), listed) == []  # not a version
    central = with_central_allowlists(listed, {"M1": None, "M3": ["1.0"]})
    assert central.firmware_allowlist == {"M3": ["1.0"]}  # M1 lifted: the flat list applies
    assert codes(replace(GOOD, model="M1", firmware="2.1.0"), central) == [
        "firmware_not_allowed"]


def test_officer_optional_when_configured() -> None:
    assert codes(replace(GOOD, officer_no=""), replace(SETTINGS, require_officer=False)) == []


def test_free_storage_in_hours_of_recording() -> None:
    hours = replace(SETTINGS, min_free_gb=None, min_free_hours=10, bitrate_mbps=8)
    assert required_free_bytes(hours) == 36 * GB  # 10 h * 3600 s * 1 MB/s
    assert codes(replace(GOOD, free_bytes=35 * GB), hours) == ["storage_low"]


def test_charging_with_eta_from_observed_rate() -> None:
    samples = [BatterySample(t, 60 + t / 60) for t in range(0, 600, 60)]  # 1 %/min
    facts = replace(GOOD, battery_percent=69, charging=True, battery_samples=samples)
    result = evaluate(facts, SETTINGS, tolerance_ms=1000)
    assert result.verdict is Verdict.CHARGING
    assert result.eta_s == pytest.approx(21 * 60)


def test_charging_without_rate_has_no_eta() -> None:
    facts = replace(GOOD, battery_percent=69, charging=True)
    result = evaluate(facts, SETTINGS, tolerance_ms=1000)
    assert result.verdict is Verdict.CHARGING and result.eta_s is None


def test_charging_but_other_failures_is_not_ready() -> None:
    facts = replace(GOOD, battery_percent=69, charging=True, officer_no="")
    assert evaluate(facts, SETTINGS, tolerance_ms=1000).verdict is Verdict.NOT_READY


def test_charge_rate_uses_recent_window_only() -> None:
    old = [BatterySample(0, 10), BatterySample(60, 90)]  # a stale, implausible jump
    recent = [BatterySample(10_000 + t, 50 + t / 120) for t in range(0, 600, 60)]
    assert charge_rate_per_s(old + recent) == pytest.approx(1 / 120)
    assert charge_rate_per_s([BatterySample(0, 50)]) is None
    assert charge_rate_per_s([BatterySample(5, 50), BatterySample(5, 51)]) is None
