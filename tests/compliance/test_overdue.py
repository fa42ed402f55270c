from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.compliance.deadlines import HoursDeadline, WorkingDaysDeadline
from agent.compliance.overdue import Whereabouts, overdue_recorders

LEFT = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # Friday 09:00 in Shanghai


def test_hours_rule() -> None:
    known = [
        Whereabouts("A", "1", LEFT, docked_now=False),
        Whereabouts("B", "2", LEFT + timedelta(hours=2), docked_now=False),
        Whereabouts("C", "3", LEFT - timedelta(days=3), docked_now=True),  # back: not overdue
        Whereabouts("D", None, None, docked_now=False),  # never left
    ]
    now = LEFT + timedelta(hours=25)
    result = overdue_recorders(known, HoursDeadline(24), now)
    assert [o.serial for o in result] == ["A"]
    assert result[0].due == LEFT + timedelta(hours=24)


def test_working_days_rule_spans_the_weekend() -> None:
    policy = WorkingDaysDeadline(2, ZoneInfo("Asia/Shanghai"))
    known = [Whereabouts("A", "1", LEFT, docked_now=False)]
    monday_evening = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert overdue_recorders(known, policy, monday_evening) == []
    wednesday = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert [o.serial for o in overdue_recorders(known, policy, wednesday)] == ["A"]
