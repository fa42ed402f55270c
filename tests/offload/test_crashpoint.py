"""The power-cut crash points (agent/crashpoint.py): inert by default, markers and a hold
when the environment asks (the HIL power-cut trials drive them; docs/power-cut.md)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent import crashpoint


def test_inert_without_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(crashpoint.LOG_ENV, raising=False)
    monkeypatch.setenv(crashpoint.HOLD_ENV, "installed:1")
    crashpoint.reached("installed")  # returns at once: no marker file, no hold
    assert list(tmp_path.iterdir()) == []


def test_markers_count_arrivals_and_the_nth_holds(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    log = tmp_path / "markers"
    monkeypatch.setenv(crashpoint.LOG_ENV, str(log))
    monkeypatch.setenv(crashpoint.HOLD_ENV, "committed:2")
    monkeypatch.setattr(crashpoint, "_counts", {})
    crashpoint.reached("installed")
    crashpoint.reached("committed")
    held = threading.Thread(target=crashpoint.reached, args=("committed",), daemon=True)
    held.start()
    held.join(timeout=1.0)  # it must not return: the power cut ends the process
    assert held.is_alive()
    assert log.read_text().splitlines() == ["installed 1", "committed 1", "HOLD committed 2"]


@pytest.mark.parametrize("spec", ["", "committed", "nosuch:1", "committed:x", "committed:"])
def test_a_malformed_hold_never_holds(spec: str) -> None:
    assert crashpoint._hold_spec(spec) is None
