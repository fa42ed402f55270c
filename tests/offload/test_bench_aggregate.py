"""The 25-bay aggregate of bench.offload: the steady-state window between the first and the
last MiB written, and the goal min(recorders x rate, single-stream disk limit)."""

from __future__ import annotations

from bench.offload import MIB, Case, _aggregate_keys, _MovedProbe


def _probe(samples: list[tuple[float, int]]) -> _MovedProbe:
    p = _MovedProbe()
    p.samples = samples
    return p


def test_steady_window_leaves_out_start_up_and_the_final_database_writes() -> None:
    p = _probe([(0.0, 0), (1.0, 4096), (2.0, MIB // 2),  # sessions start: database only
                (3.0, 100 * MIB), (4.0, 200 * MIB), (5.0, 300 * MIB),
                (6.0, 300 * MIB + 8192), (7.0, 300 * MIB + 8192)])  # commits, undock
    seconds, nbytes = p.steady() or (0.0, 0)
    assert (seconds, nbytes) == (3.0, 300 * MIB - MIB // 2)


def test_nothing_written_has_no_steady_window() -> None:
    assert _probe([]).steady() is None
    assert _probe([(0.0, 0), (1.0, 4096)]).steady() is None


def test_goal_is_the_smaller_of_the_bays_and_the_single_stream_limit() -> None:
    case = Case(25, 2, 64 * MIB, False, 2.0, rate_mb_s=35.0)
    agent = [{"steady": (2.0, 1_400_000_000)}]
    keys = _aggregate_keys(case, agent, 500.0, 576.0)
    assert keys["aggregate_goal_mb_s"] == 576.0
    assert keys["ratio_goal"] == round(500 / 576, 3)
    assert keys["steady_mb_s"] == 700.0 and keys["steady_ratio_goal"] == round(700 / 576, 3)
    # the agent alone (no baselines): the bays' own limit
    assert _aggregate_keys(case, agent, 500.0, None)["aggregate_goal_mb_s"] == 875.0
    # no rate limit and no baselines: no goal to compare with
    free = Case(1, 2, 64 * MIB, False, 2.0)
    none = _aggregate_keys(free, [{"steady": None}], 500.0, None)
    assert none["aggregate_goal_mb_s"] is None and none["steady_mb_s"] is None
