"""Clock maths: RTT compensation, sample choice, tolerance edges, unsynchronised dock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dockclock import dock_clock_probe, kernel_clock_synchronised
from agent.session.clock import (
    ClockAction,
    ClockError,
    ClockSample,
    best_sample,
    decide,
    measure_drift,
    set_target_ms,
    within_tolerance,
)
from agent.settings import ClockSettings

T0 = 1_700_000_000_000.0


def test_drift_is_against_the_midpoint_of_the_exchange() -> None:
    # Device read its clock at exactly the midpoint, and is 250 ms ahead.
    s = ClockSample(device_utc_ms=int(T0 + 50 + 250), sent_ms=T0, received_ms=T0 + 100)
    assert s.rtt_ms == 100
    assert s.midpoint_ms == T0 + 50
    assert s.drift_ms == 250


def test_without_rtt_compensation_drift_would_be_wrong() -> None:
    # Device exact; a slow 2 s exchange must not read as 1 s drift either way.
    s = ClockSample(device_utc_ms=int(T0 + 1000), sent_ms=T0, received_ms=T0 + 2000)
    assert s.drift_ms == 0


def test_smallest_rtt_sample_wins() -> None:
    noisy = ClockSample(int(T0 + 400), T0, T0 + 800)  # rtt 800, drift 0
    tight = ClockSample(int(T0 + 1005 + 30), T0 + 1000, T0 + 1010)  # rtt 10, drift 30
    also_noisy = ClockSample(int(T0 + 2000), T0 + 1900, T0 + 2300)
    assert best_sample([noisy, tight, also_noisy]) is tight
    m = measure_drift([noisy, tight, also_noisy])
    assert (m.drift_ms, m.rtt_ms, m.samples) == (30, 10, 3)


def test_ties_keep_the_first_sample() -> None:
    a = ClockSample(int(T0 + 5), T0, T0 + 10)
    b = ClockSample(int(T0 + 105), T0 + 100, T0 + 110)
    assert best_sample([a, b]) is a


def test_no_samples_and_backwards_samples_are_errors() -> None:
    with pytest.raises(ClockError):
        best_sample([])
    with pytest.raises(ClockError, match="before sent"):
        ClockSample(int(T0), T0 + 5, T0)


@pytest.mark.parametrize(
    ("drift", "ok"),
    [(0, True), (999, True), (1000, True), (-1000, True), (1001, False), (-1001, False),
     (1000.4, False)],
)
def test_tolerance_edges(drift: float, ok: bool) -> None:
    assert within_tolerance(drift, 1000) is ok
    expected = ClockAction.OK if ok else ClockAction.SET
    assert decide(drift, tolerance_ms=1000, dock_synchronised=True,
                  require_dock_sync=True) is expected


def test_unsynchronised_dock_never_sets() -> None:
    assert decide(5000, tolerance_ms=1000, dock_synchronised=False,
                  require_dock_sync=True) is ClockAction.REFUSE_UNSYNCHRONISED
    # within tolerance there is nothing to refuse
    assert decide(10, tolerance_ms=1000, dock_synchronised=False,
                  require_dock_sync=True) is ClockAction.OK
    # an operator who disabled the requirement gets the set
    assert decide(5000, tolerance_ms=1000, dock_synchronised=False,
                  require_dock_sync=False) is ClockAction.SET


def test_set_target_leads_by_one_way_delay() -> None:
    assert set_target_ms(T0, 12.4) == int(T0 + 12)


@given(
    true_drift=st.integers(-10**9, 10**9),
    sent=st.floats(0, 1e13, allow_nan=False),
    rtt=st.floats(0, 5000, allow_nan=False),
    where=st.floats(0, 1),
)
def test_error_bounded_by_half_rtt(true_drift: int, sent: float, rtt: float,
                                   where: float) -> None:
    """Wherever inside the exchange the device read its clock, the error is <= rtt/2."""
    read_at = sent + where * rtt
    s = ClockSample(round(read_at + true_drift), sent, sent + rtt)
    assert abs(s.drift_ms - true_drift) <= rtt / 2 + 1  # +1 for integer device ms


def test_probe_override_and_kernel_probe_answers() -> None:
    assert dock_clock_probe(ClockSettings(assume_synchronised=True))() is True
    assert dock_clock_probe(ClockSettings(assume_synchronised=False))() is False
    assert dock_clock_probe(ClockSettings(), kernel=lambda: True)() is True
    assert isinstance(kernel_clock_synchronised(), bool)


def test_timex_layout_matches_the_kernel_abi() -> None:
    """struct timex is 208 bytes on 64-bit Linux (and 128 on 32-bit): a wrong layout would
    make adjtimex write past our buffer or read `status` from the wrong place."""
    import ctypes

    from agent.dockclock import _Timex

    expected = 208 if ctypes.sizeof(ctypes.c_long) == 8 else 128
    assert ctypes.sizeof(_Timex) == expected
    assert _Timex.status.offset == (40 if ctypes.sizeof(ctypes.c_long) == 8 else 20)
