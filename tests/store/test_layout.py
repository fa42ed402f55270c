"""Evidence layout (regulation 004 §19): hostile components can never escape the store."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.store.errors import LayoutError
from agent.store.layout import (
    PARTIAL_PREFIX,
    check_relpath,
    is_partial_name,
    layout_relpath,
    partial_name,
    recording_day,
    sanitize_component,
)

DAY = dt.date(2026, 11, 20)


def test_plain_layout() -> None:
    assert layout_relpath("U01", "SER00001", "007", DAY, "FILE0001.MP4") == \
        "U01/SER00001/007/2026-11-20/FILE0001.MP4"


def test_empty_unit_and_officer_get_placeholders() -> None:
    assert layout_relpath("", "SER1", "", DAY, b"A.MP4") == \
        "_unassigned/SER1/_unassigned/2026-11-20/A.MP4"
    assert layout_relpath("U", "", "1", DAY, "A.MP4").split("/")[1] == "_unknown"


@pytest.mark.parametrize("hostile", [
    "..", ".", "../../etc", "a/b", "/abs", "a\\b", "nul\x00byte", "new\nline", ".hidden",
    PARTIAL_PREFIX + "x", "x" * 300, "é" * 200, b"\xff\xfe.MP4", "\ud800lone",
])
def test_hostile_components_are_made_safe(hostile: str | bytes) -> None:
    # bytes where text is declared: hostile input as it may come from a recorder
    rel = layout_relpath(hostile, hostile, hostile, DAY, hostile)  # type: ignore[arg-type]
    parts = rel.split("/")
    assert len(parts) == 5
    for part in parts:
        assert part not in ("", ".", "..")
        assert "\x00" not in part and "\\" not in part
        assert not part.startswith(".")
        assert len(part.encode("utf-8")) <= 255
    check_relpath(rel)  # and it passes the index's own check


def test_changed_names_stay_distinct() -> None:
    a = sanitize_component("a/b.MP4", keep_extension=True)
    b = sanitize_component("a_b.MP4", keep_extension=True)
    c = sanitize_component("a\\b.MP4", keep_extension=True)
    assert len({a, b, c}) == 3
    assert b == "a_b.MP4"  # untouched names are not decorated
    assert a.endswith(".MP4") and a.startswith("a_b~")


def test_long_names_keep_their_extension() -> None:
    name = "x" * 400 + ".MP4"
    out = sanitize_component(name, keep_extension=True)
    assert out.endswith(".MP4") and len(out.encode()) == 255


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_component_is_safe(value: str | bytes) -> None:
    part = sanitize_component(value)
    assert part not in ("", ".", "..")
    assert "/" not in part and "\x00" not in part and not part.startswith(".")
    assert len(part.encode("utf-8")) <= 255


@pytest.mark.parametrize("bad", [
    "", "/abs/x", "a/../b", "a//b", "./a", "a/.", "a\x00b", "a\\b", "a/" + "x" * 256,
    "a/.partial-1-x", "a/\udcffb",
])
def test_check_relpath_refuses_unsafe_paths(bad: str) -> None:
    with pytest.raises(LayoutError):
        check_relpath(bad)


def test_partial_names() -> None:
    name = partial_name("FILE.MP4", "abc123")
    assert is_partial_name(name) and name.endswith("FILE.MP4")
    assert not is_partial_name(sanitize_component(name))  # a recorder cannot forge one


def test_recording_day_uses_the_unit_time_zone() -> None:
    # 2026-11-20 17:30 UTC is already the 21st in Shanghai (UTC+8)
    t = int(dt.datetime(2026, 11, 20, 17, 30, tzinfo=dt.UTC).timestamp()) * 1_000_000
    assert recording_day(t, "UTC") == dt.date(2026, 11, 20)
    assert recording_day(t, "Asia/Shanghai") == dt.date(2026, 11, 21)
