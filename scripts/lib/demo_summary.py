"""The demo's closing summary: what the story promised, read from `dockctl status --json`
(stdin): each recorder's readiness (with the CHARGING ETA) and its offload, including how
much of an interrupted copy was resumed instead of copied again."""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.dockctl.render import human_duration


def line(bay: dict[str, Any]) -> str:
    serial = bay.get("serial") or bay.get("key") or "?"
    readiness = bay.get("readiness") or {}
    verdict = readiness.get("verdict", "-")
    battery = (bay.get("battery") or {}).get("percent")
    text = f"{serial}  bay {bay.get('bay', '?')}  {verdict}"
    if verdict == "CHARGING":
        eta = readiness.get("eta_s")
        text += (f", ready in about {human_duration(eta)}" if eta is not None
                 else ", ETA not known yet (the battery has not risen since docking)")
        if battery is not None:
            text += f" (battery {battery} %)"
    result = bay.get("offload_result") or {}
    if result:
        text += (f"; offload {result.get('outcome')}: {result.get('stored', 0)} stored,"
                 f" {result.get('already_stored', 0)} already stored")
        resumed = int(result.get("resumed_bytes") or 0)
        if resumed:
            text += (f"; the interrupted file resumed at byte {resumed}"
                     f" ({resumed / 2**20:.1f} MiB), not copied again from 0")
    return text


def main() -> int:
    status = json.load(sys.stdin)
    for bay in status.get("bays", []):
        print(line(bay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
