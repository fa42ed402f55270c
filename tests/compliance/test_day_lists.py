"""The one holiday/workday list parser, as the config check and the deadline policy use it."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from agent.compliance.day_lists import (
    DayList,
    DayListProblem,
    parse_day_list_text,
    read_day_list,
)
from agent.compliance.deadlines import DeadlineConfigError, load_day_list, parse_day_list
from agent.config import ConfigInvalid, parse_settings, read_date_file
from agent.inputfiles import MAX_CONFIG_BYTES

LIST = "# national holidays\n2026-10-01\n\n2026-10-02  # second day\n2026-13-01\n1 Oct\n"


def test_days_comments_and_blank_lines() -> None:
    parsed = parse_day_list_text("# holidays\n\n  2026-10-01  \n2026-10-02 # two\n2026-10-01\n")
    assert parsed == DayList(frozenset({date(2026, 10, 1), date(2026, 10, 2)}))
    assert parse_day_list_text("") == DayList(frozenset())


def test_every_bad_line_is_reported_with_its_number() -> None:
    parsed = parse_day_list_text(LIST)
    assert parsed.days == {date(2026, 10, 1), date(2026, 10, 2)}
    assert [p.line for p in parsed.problems] == [5, 6]
    assert parsed.problems[0].message.startswith("2026-13-01 is not a valid date (")
    assert parsed.problems[1] == DayListProblem(6, 'expected a date YYYY-MM-DD, got "1 Oct"')


@pytest.mark.parametrize("entry", ["2026-1-01", "20261001", "2026-10-01T00:00"])
def test_only_the_iso_day_form_is_a_date(entry: str) -> None:
    (problem,) = parse_day_list_text(entry + "\n").problems
    assert problem.line == 1 and "expected a date YYYY-MM-DD" in problem.message


def test_non_ascii_digits_are_not_a_date() -> None:
    parsed = parse_day_list_text("２０２６-10-01\n")
    assert parsed.days == frozenset() and [p.line for p in parsed.problems] == [1]


def test_a_long_bad_entry_is_cut_in_the_message() -> None:
    (problem,) = parse_day_list_text("x" * 500 + "\n").problems
    assert problem.message.endswith('got "' + "x" * 36 + "...")
    assert len(problem.message) < 80


def test_unreadable_lists_are_one_problem_without_a_line(tmp_path: Path) -> None:
    missing = read_day_list(tmp_path / "absent.txt")
    assert missing.days == frozenset() and [p.line for p in missing.problems] == [None]
    assert missing.problems[0].message.startswith("cannot read date list: ")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # must not hang
    assert read_day_list(fifo).problems == (
        DayListProblem(None, "cannot read date list: is a FIFO, not a regular file"),)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("2026-10-01 # Fête\n".encode("latin-1"))
    (problem,) = read_day_list(binary).problems
    assert problem.line is None and "codec can't decode" in problem.message
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"2026-10-01\n" * (MAX_CONFIG_BYTES // 11 + 1))
    (problem,) = read_day_list(huge).problems
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in problem.message


def test_deadline_policy_names_file_and_line_of_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "holidays.txt"
    path.write_text(LIST)
    with pytest.raises(DeadlineConfigError) as info:
        load_day_list(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [f"{path}:5", f"{path}:6"]
    with pytest.raises(DeadlineConfigError, match=r"absent.txt: cannot read date list: "):
        load_day_list(tmp_path / "absent.txt")
    assert load_day_list(None) == frozenset()
    assert parse_day_list("2026-10-01\n", "h.txt") == {date(2026, 10, 1)}


def test_config_check_and_deadline_policy_agree(tmp_path: Path) -> None:
    """The same file gives the same days and the same messages on the same lines, whether
    the operator checks the config or the agent builds its deadline policy."""
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("2026-10-01\n2026-10-02 # x\n")
    bad.write_text(LIST)
    assert read_date_file(good) == load_day_list(good) == read_day_list(good).days
    with pytest.raises(ConfigInvalid) as from_config:
        read_date_file(bad)
    with pytest.raises(DeadlineConfigError) as from_policy:
        load_day_list(bad)
    assert str(from_config.value).splitlines() == str(from_policy.value).splitlines()
    (tmp_path / "fleet.secret").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "fleet.secret").chmod(0o600)
    text = ('[dock]\nid = "d1"\n[[devices.allow]]\nvid = "1d6b"\npid = "0104"\n'
            '[recorder]\nfleet_secret_file = "fleet.secret"\n[mqtt]\nenabled = false\n'
            '[deadline]\nworking_days = 2\nholiday_file = "bad.txt"\n')
    with pytest.raises(ConfigInvalid) as loaded:
        parse_settings(text, source="c.toml", base_dir=tmp_path)
    assert [(i.file, i.line, i.key) for i in loaded.value.issues] == [
        (str(bad), 5, "deadline.holiday_file"), (str(bad), 6, "deadline.holiday_file")]
    assert [f"{i.file}:{i.line}: {i.message}" for i in loaded.value.issues] == \
        str(from_policy.value).splitlines()
