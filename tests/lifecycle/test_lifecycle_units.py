"""Pure parts of the lifecycle: approver rules, C4 ids, ASC MHL encoding, audit slices."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent.lifecycle import audit, mhl
from agent.lifecycle.access import check_approver, parse_request
from agent.lifecycle.errors import AccessRefused

APPROVERS = {"U03": ["insp.wang"], "*": ["chief.li"]}


def req(**kw: str) -> dict[str, str]:
    return {"requester": "det.liu", "approver": "insp.wang", "purpose": "court", **kw}


@pytest.mark.parametrize(("args", "why"), [
    (req(approver=""), "approver is required"),
    ({"requester": "det.liu", "purpose": "court"}, "approver is required"),
    (req(requester=""), "requester is required"),
    (req(purpose=""), "purpose is required"),
    (req(approver="det.liu"), "someone other than the requester"),
    (req(purpose="a\nforged line"), "printable"),
])
def test_incomplete_requests_are_refused(args: dict[str, str], why: str) -> None:
    with pytest.raises(AccessRefused, match=why):
        parse_request(args)


def test_approver_must_be_listed_for_every_unit() -> None:
    check_approver(parse_request(req()), {"U03"}, APPROVERS)
    check_approver(parse_request(req(approver="chief.li")), {"U03", "U07"}, APPROVERS)
    with pytest.raises(AccessRefused, match="not an approver for unit 'U07'"):
        check_approver(parse_request(req()), {"U03", "U07"}, APPROVERS)
    with pytest.raises(AccessRefused, match="no approver is configured"):
        check_approver(parse_request(req()), {"U03"}, {})


def test_c4_id_matches_the_reference_implementation() -> None:
    from ascmhl.hasher import C4  # the ASC's own implementation (dev dependency)

    for data in (b"", b"a", bytes(range(256)) * 17):
        ref = C4()
        ref.update(data)
        assert mhl.c4_id(data) == ref.string_digest()


def test_hashlist_round_trips_and_escapes_paths() -> None:
    entries = [mhl.MhlEntry("files/a&b <1>.mp4", 3, "a" * 40), mhl.MhlEntry("x", 0, "b" * 40)]
    xml = mhl.hashlist_xml(entries, moment=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),
                           hostname="dock", tool_version="1")
    assert mhl.parse_hashlist(xml) == {"files/a&b <1>.mp4": (3, "a" * 40), "x": (0, "b" * 40)}


@pytest.mark.parametrize(("total", "interval_s", "days", "want"), [
    (0, 3600, 30, 1), (720, 3600, 30, 1), (721, 3600, 30, 2), (10_000, 86400, 10, 1000),
    (5, 3600, 0.01, 5),
])
def test_audit_slices_cover_the_store_once_per_cycle(total: int, interval_s: float,
                                                     days: float, want: int) -> None:
    assert audit.slice_size(total, interval_s, days) == want


@pytest.mark.parametrize(("text", "start", "end"), [
    ("2026-Q3", "2026-07-01", "2026-10-01"), ("2026-Q4", "2026-10-01", "2027-01-01"),
    ("2026-12", "2026-12-01", "2027-01-01"), ("2026", "2026-01-01", "2027-01-01"),
    ("2026-07-01..2026-07-01", "2026-07-01", "2026-07-02"),
])
def test_report_periods_are_unit_local(text: str, start: str, end: str) -> None:
    from zoneinfo import ZoneInfo

    from agent.lifecycle.report import parse_period

    tz = ZoneInfo("Asia/Shanghai")
    p = parse_period(text, tz)
    assert p.start == dt.datetime.fromisoformat(start).replace(tzinfo=tz)
    assert p.end == dt.datetime.fromisoformat(end).replace(tzinfo=tz)


@pytest.mark.parametrize("text", ["2026-Q5", "2026-13", "26", "2026-07-02..2026-07-01", ""])
def test_bad_report_periods_are_refused(text: str) -> None:
    from agent.lifecycle.report import PeriodError, parse_period

    with pytest.raises(PeriodError):
        parse_period(text, dt.UTC)


def test_audit_reads_yield_to_offloads(tmp_path: Any) -> None:
    """While `busy()` says an offload runs, the audit does not read on."""
    from blake3 import blake3

    data = bytes(range(256)) * 8192  # 2 MiB: two chunks
    path = tmp_path / "f"
    path.write_bytes(data)
    calls: list[int] = []

    def busy() -> bool:
        calls.append(1)
        return len(calls) == 1  # busy at the first check, then free

    size, digest = audit.rehash(path, max_bytes_per_s=1e12, busy=busy)
    assert (size, digest) == (len(data), blake3(data).hexdigest())
    assert len(calls) == 3  # re-checked after waiting, then once per further chunk
