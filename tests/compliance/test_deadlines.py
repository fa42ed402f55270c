from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent.compliance.deadlines import (
    DeadlineConfigError,
    HoursDeadline,
    WorkingDaysDeadline,
    lateness,
    make_policy,
    parse_day_list,
)

SH = ZoneInfo("Asia/Shanghai")  # UTC+8, no DST


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0, tz: ZoneInfo = SH) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=tz).astimezone(UTC)


# 2026-11-23 is a Monday.
@pytest.mark.parametrize(
    ("event", "expected_due", "why"),
    [
        (local(2026, 11, 23, 10), local(2026, 11, 26), "Mon -> end of Wed"),
        (local(2026, 11, 27, 23, 59), local(2026, 12, 2), "Fri late evening -> end of Tue"),
        (local(2026, 11, 28, 9), local(2026, 12, 2), "Sat -> Mon, Tue"),
        (local(2026, 11, 29, 9), local(2026, 12, 2), "Sun -> Mon, Tue"),
        # 23:30 UTC Sunday is already Monday 07:30 in Shanghai: the local day decides.
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), local(2026, 12, 3), "UTC Sun = local Mon"),
        (datetime(2026, 11, 29, 15, 59, tzinfo=UTC), local(2026, 12, 2), "local Sun 23:59"),
    ],
)
def test_two_working_days(event: datetime, expected_due: datetime, why: str) -> None:
    policy = WorkingDaysDeadline(2, SH)
    assert policy.due(event) == expected_due, why


def test_holidays_are_skipped_and_makeup_workdays_count() -> None:
    # National Day week: Oct 1-7 2026 holidays, Sat Oct 10 a make-up workday.
    holidays = frozenset(date(2026, 10, d) for d in range(1, 8))
    policy = WorkingDaysDeadline(2, SH, holidays=holidays, workdays=frozenset({date(2026, 10, 10)}))
    # Recorded Wed Sep 30: Oct 1-7 off, Thu Oct 8 (1), Fri Oct 9 (2).
    assert policy.due(local(2026, 9, 30, 18)) == local(2026, 10, 10)
    # Recorded Fri Oct 9: Sat Oct 10 is worked (1), Mon Oct 12 (2).
    assert policy.due(local(2026, 10, 9, 18)) == local(2026, 10, 13)


def test_dst_zone_end_of_day_is_local_midnight() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    policy = WorkingDaysDeadline(1, berlin)
    # Fri 2026-10-23 -> Mon 2026-10-26; DST ended on Sun 25th, so midnight is UTC+1.
    due = policy.due(datetime(2026, 10, 23, 12, tzinfo=berlin))
    assert due == datetime(2026, 10, 26, 23, 0, tzinfo=UTC)


def test_hours_rule_and_lateness() -> None:
    policy = HoursDeadline(24)
    end = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    on_time = lateness(policy, end, end + timedelta(hours=24))
    assert not on_time.late and on_time.late_by_s == 0
    late = lateness(policy, end, end + timedelta(hours=25, seconds=30))
    assert late.late and late.late_by_s == pytest.approx(3630)
    assert late.deadline == end + timedelta(hours=24)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        HoursDeadline(24).due(datetime(2026, 1, 1))


def test_make_policy_requires_exactly_one_rule() -> None:
    with pytest.raises(DeadlineConfigError):
        make_policy(hours=24, working_days=2, tz=SH)
    with pytest.raises(DeadlineConfigError):
        make_policy(hours=None, working_days=None, tz=SH)
    assert isinstance(make_policy(hours=None, working_days=2, tz=SH), WorkingDaysDeadline)


def test_day_list_parsing_names_file_and_line() -> None:
    days = parse_day_list("# holidays\n2026-10-01\n\n2026-10-02  # second\n", "h.txt")
    assert days == {date(2026, 10, 1), date(2026, 10, 2)}
    with pytest.raises(DeadlineConfigError, match=r"h.txt:2: expected a date YYYY-MM-DD"):
        parse_day_list("2026-10-01\n1 Oct 2026\n", "h.txt")
    with pytest.raises(DeadlineConfigError, match=r"h.txt:1: .* is not a valid date"):
        parse_day_list("2026-02-30\n", "h.txt")


def test_a_year_of_holidays_is_an_error_not_a_hang() -> None:
    start = date(2026, 1, 1)
    every_day = frozenset(start + timedelta(days=i) for i in range(800))
    with pytest.raises(DeadlineConfigError, match="no working day"):
        WorkingDaysDeadline(2, SH, holidays=every_day).due(local(2026, 1, 1))
