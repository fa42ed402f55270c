"""The board the screen shows, derived from canned agent replies (pure)."""

from __future__ import annotations

from typing import Any

from agent.screen.board import build, preshift


def entry(bay: str, serial: str, verdict: str, *, state: str = "released",
          officer: str | None = "6001001", battery: float | None = 90,
          reasons: list[dict[str, str]] | None = None, eta: float | None = None,
          result: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "bay": bay, "key": serial, "serial": serial, "state": state, "officer_no": officer,
        "officer_name": "Tang Hui" if officer else None,
        "battery": {"percent": battery, "charging": True} if battery is not None else None,
        "readiness": {"verdict": verdict, "reasons": reasons or [], "eta_s": eta},
        "offload_result": result if result is not None else {"outcome": "complete", "stored": 2},
        "faults": [], **extra,
    }


def status(*bays: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"dock_id": "dock-7", "broker_connected": False, "outbox_depth": 3,
            "store_free_bytes": 5_000_000_000, "bays": list(bays), **extra}


def test_verdicts_reasons_and_when_footage_is_safe() -> None:
    board = build(status(
        entry("10", "BWC1", "READY"),
        entry("2", "BWC2", "CHARGING", battery=30, eta=1800, reasons=[
            {"code": "battery_low", "message": "battery 30% < 60%"}]),
        entry("3", "BWC3", "NOT_READY", result={"outcome": "partial", "stored": 1, "failed": 2},
              reasons=[{"code": "offload_pending", "message": "2 file(s) not yet offloaded"},
                       {"code": "open_fault", "message": "open fault: read_error"},
                       {"code": "new_rule", "message": "something new"}]),
        entry("4", "BWC4", "NOT_READY", state="offloading", result={},
              offload={"bytes_done": 25, "bytes_total": 100, "files_done": 1,
                       "files_total": 4, "rate_bps": 10.0, "eta_s": 7.5}),
        entry("5", "BWC5", "NOT_READY", state="failed", result={},
              faults=[{"code": "auth_refused"}]),
    ), {"clock_synchronised": False, "store_free_percent": 12.5,
        "issues": [{"code": "dock_clock_unsynchronised", "reason": "..."}]}).as_dict()
    by_bay = {b["bay"]: b for b in board["bays"]}
    assert [b["bay"] for b in board["bays"]] == ["2", "3", "4", "5", "10"]  # numeric order
    assert by_bay["10"]["phase"] == "safe" and by_bay["10"]["stored"] == 2
    two = by_bay["2"]
    assert (two["verdict"], two["eta_s"], two["reasons"][0]["value"]) == ("CHARGING", 1800, "30%")
    three = by_bay["3"]
    assert three["phase"] == "kept" and three["not_copied"] == 2  # not safe to take
    assert [r["value"] for r in three["reasons"]] == ["2", "read_error", None]
    assert three["reasons"][2]["text"] == "something new"  # unknown code: the agent's words
    four = by_bay["4"]
    assert four["phase"] == "offloading" and four["progress"]["percent"] == 25.0
    assert by_bay["5"]["phase"] == "failed" and by_bay["5"]["faults"] == ["auth_refused"]
    h = board["header"]
    assert h["clock_synchronised"] is False and h["dock_faults"] == ["dock_clock_unsynchronised"]
    assert h["broker_connected"] is False and h["outbox_depth"] == 3
    assert h["upload"] is None  # the agent does not report an upload state


def test_upload_state_shown_only_when_the_agent_reports_it() -> None:
    board = build(status(upload={"state": "idle", "pending": 4}), {})
    assert board.header.upload == {"state": "idle", "pending": 4}


def test_unreachable_agent() -> None:
    board = build(None, None, "agent not running").as_dict()
    assert board["header"]["agent_reachable"] is False
    assert board["header"]["agent_error"] == "agent not running" and board["bays"] == []


def test_hostile_values_stay_data() -> None:
    board = build(status(entry("1", "<script>", "READY", officer="<b>1</b>")), {})
    bay = board.bays[0]
    assert bay.serial == "<script>" and bay.officer_no == "<b>1</b>"  # escaped by the page


def test_preshift_order_and_best_recorder_per_officer() -> None:
    board = build(status(
        entry("1", "A-NR", "NOT_READY", officer="7"),
        entry("2", "A-CH-late", "CHARGING", officer="7", battery=20, eta=3600),
        entry("3", "A-CH-soon", "CHARGING", officer="7", battery=50, eta=600),
        entry("4", "B-R-low", "READY", officer="8", battery=70),
        entry("5", "B-R-full", "READY", officer="8", battery=100),
        entry("6", "nobody", "READY", officer=None, battery=99),
    ), {})
    rows = preshift(board.bays)
    assert [r.bay.serial for r in rows] == [
        "B-R-full", "nobody", "B-R-low", "A-CH-soon", "A-CH-late", "A-NR"]
    assert {r.bay.serial for r in rows if r.best_for_officer} == {"B-R-full", "A-CH-soon"}
    assert board.as_dict()["preshift"][0] == {"bay": "5", "best": True}
