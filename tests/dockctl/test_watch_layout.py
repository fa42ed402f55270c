"""The live view fits an 80-column terminal without clipping, and `dockctl status` and
`dockctl watch` show the bay table's columns in the same order."""

from __future__ import annotations

from typing import Any

from agent.dockctl import cli, watch
from agent.dockctl.render import display_width


def bay(n: int, state: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bay": str(n), "serial": f"BWC0000{n}", "key": f"BWC0000{n}", "state": state,
        "officer_no": "1001001", "officer_name": "欧阳娜娜", "battery_percent": 35.0,
        "readiness": {"verdict": "NOT_READY", "eta_s": None, "reasons": [
            {"code": "battery_low", "message": "battery 35% is below 60%"}]},
    }
    out.update(extra)
    return out


def busy_dock() -> dict[str, Any]:
    finished = {"outcome": "interrupted", "stored": 12, "already_stored": 3, "failed": 1,
                "refused": 2, "late": 4}
    return {"dock_id": "dock-station-7", "version": "1.0.0", "broker_connected": True,
            "outbox_depth": 123456, "store_free_bytes": 987_654_321_000, "bays": [
                bay(1, "storage_unlocked"),
                bay(2, "offloading", offload={"bytes_done": 5 << 30, "bytes_total": 9 << 30,
                                              "rate_bps": 41_000_000.0}),
                bay(3, "released", offload_result=finished, readiness={
                    "verdict": "CHARGING", "eta_s": 3725, "reasons": [
                        {"code": "battery_low", "message": "battery 35% is below 60%"}]}),
                bay(4, "authenticated", officer_no=None, officer_name=None, readiness={
                    "verdict": "NOT_READY", "eta_s": None, "reasons": [
                        {"code": "no_officer", "message": "no officer assigned"},
                        {"code": "clock", "message": "clock drift 42500 ms not corrected"},
                        {"code": "offload", "message": "2 files still on the recorder"}]}),
                bay(5, "failed", offload_result={"outcome": "complete", "stored": 6,
                                                 "already_stored": 2}),
            ]}


EVENTS = [(1_795_000_000.0 + i, text) for i, text in enumerate([
    "offloaded      bay 5 BWC00005  BWC00005_20261127_101500_0003.MP4",
    "clock_set      bay 2 BWC00002  drift -42500 ms, set",
    "undocked       bay 5 BWC00005  offload interrupted, 3 stored",
])]


def test_live_view_fits_80_columns_without_clipping() -> None:
    text = watch.render(watch.Snapshot(busy_dock(), EVENTS), now=1_795_000_000.0, columns=80)
    too_wide = [line for line in text.splitlines() if display_width(line) > 80]
    assert too_wide == []
    for n in range(1, 6):
        assert f"BWC0000{n}" in text
    assert "CHARGING" in text and "ready in about 1h02m" in text
    assert "interrupted: 12 new, 3 old" in text and "complete: 6 new, 2 old" in text


def test_status_and_watch_agree_on_column_order() -> None:
    status = cli._status_text(busy_dock()).splitlines()
    live = watch.render(watch.Snapshot(busy_dock(), []), now=0.0).splitlines()
    header = next(line for line in status if line.startswith("BAY"))
    assert header.split() == list(watch.COLUMNS)
    assert next(line for line in live if line.startswith("BAY")).split() == header.split()
