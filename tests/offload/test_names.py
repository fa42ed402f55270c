"""Store-side naming rules (pure)."""

from __future__ import annotations

from agent.offload.names import disambiguated, partial_name
from agent.store.layout import is_partial_name


def test_partial_names_are_deterministic_and_distinct() -> None:
    a = partial_name("RC000001", b"DCIM/A.MP4")
    assert a == partial_name("RC000001", b"DCIM/A.MP4") and is_partial_name(a)
    assert a != partial_name("RC000002", b"DCIM/A.MP4")
    assert a != partial_name("RC000001", b"DCIM/B.MP4")
    assert len(a.encode()) < 64


def test_disambiguated_keeps_extension_and_differs() -> None:
    one = disambiguated("A.MP4", b"DCIM/100/A.MP4")
    two = disambiguated("A.MP4", b"DCIM/101/A.MP4")
    assert one.endswith(".MP4") and two.endswith(".MP4") and one != two
    assert one == disambiguated("A.MP4", b"DCIM/100/A.MP4")
    long = disambiguated("A" * 251 + ".MP4", b"x")
    assert len(long.encode()) <= 255 and long.endswith(".MP4")
    assert disambiguated("noext", b"x").startswith("noext~")
