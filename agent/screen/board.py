"""What the dock screen shows, derived from the agent's status and health replies.

Pure code: the agent's `status` and `health` control replies in, a language-neutral board
out (message codes and values, never sentences). The browser turns codes into words from
the message catalogue, so the same board serves every language and recorder-supplied text
only ever travels as data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICT_RANK = {"READY": 0, "CHARGING": 1, "NOT_READY": 2}
FIRMWARE_UPDATING = "firmware_updating"  # the readiness reason of an update in progress
OFFLOADING = "offloading"
CHECKING = frozenset({"detected", "authenticated", "identified", "clock_checked",
                      "status_read", "storage_unlocked", "mounted"})


@dataclass(frozen=True)
class Reason:
    code: str  # readiness reason code; the catalogue has `reason.<code>`
    value: str | None = None  # the number or name the sentence needs (battery %, fault code)
    text: str | None = None  # the agent's own English words, for codes the catalogue lacks


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    rate_bps: float | None
    eta_s: float | None
    percent: float


@dataclass(frozen=True)
class Bay:
    bay: str
    serial: str | None
    model: str | None
    officer_no: str | None
    officer_name: str | None
    state: str
    # What the officer should do or wait for:
    # checking | offloading | updating | safe | kept | failed
    phase: str
    verdict: str
    reasons: list[Reason]
    eta_s: float | None
    battery_percent: float | None
    charging: bool
    progress: Progress | None
    stored: int
    not_copied: int  # files still only on the recorder after the offload
    faults: list[str]
    firmware_percent: float | None = None  # of a firmware transfer in progress


@dataclass(frozen=True)
class Header:
    dock_id: str | None
    agent_reachable: bool
    agent_error: str | None
    clock_synchronised: bool | None
    store_free_bytes: int | None
    store_free_percent: float | None
    broker_connected: bool | None  # None: MQTT reporting is off
    outbox_depth: int | None
    upload: dict[str, Any] | None  # only when the agent reports an upload state
    dock_faults: list[str] = field(default_factory=list)  # open health issues, by code


@dataclass(frozen=True)
class Board:
    header: Header
    bays: list[Bay]

    def as_dict(self) -> dict[str, Any]:
        """The JSON the browser gets: the board plus the pre-shift order (bay labels)."""
        out = asdict(self)
        out["preshift"] = [{"bay": r.bay.bay, "best": r.best_for_officer}
                           for r in preshift(self.bays)]
        return out


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: object) -> int:
    n = _num(value)
    return int(n) if n is not None else 0


def _str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def reasons_of(entry: Mapping[str, Any]) -> list[Reason]:
    """The readiness reasons with the one value each sentence needs, taken from the
    recorder's facts (the agent's own English message is kept for unknown codes)."""
    readiness = entry.get("readiness") or {}
    battery = entry.get("battery") or {}
    clock = entry.get("clock") or {}
    storage = entry.get("storage") or {}
    result = entry.get("offload_result") or {}
    out = []
    for r in readiness.get("reasons") or []:
        if not isinstance(r, Mapping):
            continue
        code, message = str(r.get("code")), _str(r.get("message"))
        value: str | None = None
        if code == "battery_low" and _num(battery.get("percent")) is not None:
            value = f"{_num(battery.get('percent')):.0f}%"
        elif code == "clock_drift":
            drift = _num(clock.get("drift_after_ms", clock.get("drift_before_ms")))
            value = f"{drift / 1000:+.1f} s" if drift is not None else None
        elif code == "storage_low" and _num(storage.get("free_bytes")) is not None:
            value = f"{_int(storage.get('free_bytes')) / 1e9:.1f} GB"
        elif code == "offload_pending" and _int(result.get("failed")):
            value = str(_int(result.get("failed")))
        elif code == "firmware_not_allowed":
            value = _str(entry.get("firmware"))
        elif code == "open_fault" and message and ": " in message:
            value = message.split(": ", 1)[1]
        out.append(Reason(code, value, message))
    return out


def _progress(entry: Mapping[str, Any]) -> Progress | None:
    prog = entry.get("offload")
    if entry.get("state") != OFFLOADING or not isinstance(prog, Mapping):
        return None
    done, total = _int(prog.get("bytes_done")), _int(prog.get("bytes_total"))
    return Progress(
        bytes_done=done, bytes_total=total, files_done=_int(prog.get("files_done")),
        files_total=_int(prog.get("files_total")), rate_bps=_num(prog.get("rate_bps")),
        eta_s=_num(prog.get("eta_s")),
        percent=round(100.0 * done / total, 1) if total > 0 else 0.0,
    )


def _firmware_updating(entry: Mapping[str, Any]) -> bool:
    """Readiness says a firmware update is running (the session itself stays `released`)."""
    reasons = (entry.get("readiness") or {}).get("reasons") or []
    return any(isinstance(r, Mapping) and r.get("code") == FIRMWARE_UPDATING for r in reasons)


def _firmware_percent(entry: Mapping[str, Any]) -> float | None:
    field = entry.get("firmware_update")
    progress = field.get("progress") if isinstance(field, Mapping) else None
    return _num(progress.get("percent")) if isinstance(progress, Mapping) else None


def phase_of(entry: Mapping[str, Any]) -> str:
    """`safe` only when the agent released the recorder after an offload that left nothing
    behind (and no firmware update is running on it): that is when footage is in custody and
    the officer may take the recorder."""
    state = str(entry.get("state"))
    result = entry.get("offload_result")
    if state == OFFLOADING:
        return "offloading"
    if state == "failed":
        return "failed"
    if _firmware_updating(entry):
        return "updating"
    if state == "released" and isinstance(result, Mapping):
        complete = result.get("outcome") == "complete" and not _int(result.get("failed"))
        return "safe" if complete else "kept"
    return "checking"


def bay_of(entry: Mapping[str, Any]) -> Bay:
    readiness = entry.get("readiness") or {}
    battery = entry.get("battery") or {}
    result = entry.get("offload_result") or {}
    faults = [str(f.get("code")) if isinstance(f, Mapping) else str(f)
              for f in entry.get("faults") or []]
    verdict = str(readiness.get("verdict") or "NOT_READY")
    return Bay(
        bay=str(entry.get("bay")), serial=_str(entry.get("serial") or entry.get("key")),
        model=_str(entry.get("model")), officer_no=_str(entry.get("officer_no")),
        officer_name=_str(entry.get("officer_name")), state=str(entry.get("state")),
        phase=phase_of(entry), verdict=verdict if verdict in VERDICT_RANK else "NOT_READY",
        reasons=reasons_of(entry), eta_s=_num(readiness.get("eta_s")),
        battery_percent=_num(battery.get("percent")), charging=bool(battery.get("charging")),
        progress=_progress(entry),
        stored=_int(result.get("stored")) + _int(result.get("already_stored")),
        not_copied=_int(result.get("failed")), faults=faults,
        firmware_percent=_firmware_percent(entry) if _firmware_updating(entry) else None,
    )


def _upload(status: Mapping[str, Any], health: Mapping[str, Any]) -> dict[str, Any] | None:
    for source in (status, health):
        value = source.get("upload")
        if isinstance(value, Mapping):
            return dict(value)
    return None


def build(status: Mapping[str, Any] | None, health: Mapping[str, Any] | None,
          error: str | None = None) -> Board:
    """The board; `status` None means the agent could not be reached (`error` says why)."""
    health = health or {}
    if status is None:
        header = Header(dock_id=_str(health.get("dock_id")), agent_reachable=False,
                        agent_error=error, clock_synchronised=None, store_free_bytes=None,
                        store_free_percent=None, broker_connected=None, outbox_depth=None,
                        upload=None)
        return Board(header, [])
    issues = [str(i.get("code")) for i in health.get("issues") or [] if isinstance(i, Mapping)]
    free = status.get("store_free_bytes")
    if free is None:  # the agent learns it from its first health sample
        free = health.get("store_free_bytes")
    header = Header(
        dock_id=_str(status.get("dock_id")), agent_reachable=True, agent_error=None,
        clock_synchronised=health.get("clock_synchronised")
        if isinstance(health.get("clock_synchronised"), bool) else None,
        store_free_bytes=_int(free) if _num(free) is not None else None,
        store_free_percent=_num(health.get("store_free_percent")),
        broker_connected=status.get("broker_connected")
        if isinstance(status.get("broker_connected"), bool) else None,
        outbox_depth=int(status["outbox_depth"]) if _num(status.get("outbox_depth")) is not None
        else None,
        upload=_upload(status, health), dock_faults=issues,
    )
    bays = sorted((bay_of(e) for e in status.get("bays") or [] if isinstance(e, Mapping)),
                  key=lambda b: _bay_key(b.bay))
    return Board(header, bays)


def _bay_key(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (1 << 30, label)


# --- the pre-shift view ---------------------------------------------------------------------

def readiness_key(bay: Bay) -> tuple[int, float, float]:
    """Best first: READY, then CHARGING soonest ready, then NOT_READY; fuller battery first."""
    eta = bay.eta_s if bay.eta_s is not None else float("inf")
    if bay.verdict != "CHARGING":
        eta = 0.0
    return (VERDICT_RANK[bay.verdict], eta, -(bay.battery_percent or 0.0))


@dataclass(frozen=True)
class PreshiftRow:
    bay: Bay
    best_for_officer: bool


def preshift(bays: Sequence[Bay]) -> list[PreshiftRow]:
    """Recorders sorted by readiness for the next shift; for each officer, the one recorder
    they should take (the best of theirs) is marked."""
    ordered = sorted(bays, key=readiness_key)
    best: dict[str, str] = {}
    for b in ordered:
        if b.officer_no and b.officer_no not in best:
            best[b.officer_no] = b.bay
    return [PreshiftRow(b, bool(b.officer_no) and best.get(b.officer_no or "") == b.bay)
            for b in ordered]
