"""The part of scripts/demo's story that reacts to what happens instead of a fixed timeline.

It watches the agent's status over the control socket and drives dock-sim through its
stdin FIFO:
  1. when BWC00005 is docked and its copy is under way, it is pulled out mid-copy: by the
     FUSE fault in the scenario, or (without FUSE, `--pull`) by an `unplug` command;
  2. while it is out, the central service assigns an officer to BWC00004 over MQTT
     (mosquitto_pub; the reply is collected with mosquitto_sub);
  3. a few seconds later BWC00005 is put back, and the agent resumes the copy.
If BWC00005's copy completes without leaving (its files were stored by an earlier run),
it stays docked. Waiting on events rather than on times keeps the story right on slow
machines. Every step is logged to stdout with a time stamp.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.control import ControlClientError, request

PULLED, OFFICER_FOR, DOCK_ID = "BWC00005", "BWC00004", "demo-dock"
OFFICER = {"serial": OFFICER_FOR, "officer_no": "1001004", "officer_name": "Zhao Lei",
           "unit_no": "U02", "unit_name": "Inspection 2"}


def say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class Director:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.helpers: list[subprocess.Popen[bytes]] = []

    def stop_helpers(self) -> None:
        for proc in self.helpers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def bay_of(self, serial: str) -> dict[str, Any] | None:
        try:
            status = request(self.args.control, "status", timeout=5.0)
        except ControlClientError:
            return None
        for bay in status.get("bays", []):
            if (bay.get("serial") or bay.get("key")) == serial:
                return dict(bay)
        return None

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        say(f"gave up waiting for {what} after {timeout:g} s")
        return False

    def sim(self, command: str) -> None:
        say(f"dock-sim: {command}")
        with open(self.args.sim_in, "w", encoding="utf-8") as fifo:
            fifo.write(command + "\n")

    def copy_state(self) -> str | None:
        """"copying" once bytes are moving, "finished" once the offload has a result."""
        bay = self.bay_of(PULLED)
        if bay is None:
            return None
        if bay.get("offload_result") is not None:
            return "finished"
        done = int((bay.get("offload") or {}).get("bytes_done", 0) or 0)
        return "copying" if bay.get("state") == "offloading" and done > 0 else None

    def run(self) -> int:
        if not self.wait(f"{PULLED} to dock", lambda: self.bay_of(PULLED) is not None, 120):
            return 1
        label = str((self.bay_of(PULLED) or {}).get("bay", "5"))
        say(f"{PULLED} docked in bay {label}")
        outcome: list[str] = []
        if self.args.pull:
            seen: list[str] = []

            def started() -> bool:
                state = self.copy_state()
                if state is not None:
                    seen.append(state)
                return state is not None

            self.wait(f"{PULLED}'s copy to start", started, 60)
            if seen == ["copying"]:
                self.sim(f"unplug {label}")
                # It leaves even if the copy finished in the meantime.
                self.wait(f"{PULLED} to leave", lambda: self.bay_of(PULLED) is None, 60)
                outcome.append("left")

        def left_or_done() -> bool:
            bay = self.bay_of(PULLED)
            result = None if bay is None else bay.get("offload_result")
            if bay is None:
                outcome.append("left")
            elif isinstance(result, dict) and result.get("outcome") == "complete":
                outcome.append("done")
            return bool(outcome)

        if not outcome:
            self.wait(f"{PULLED} to leave or finish", left_or_done, 180)
        pulled_out = outcome == ["left"]
        if pulled_out:
            say(f"{PULLED} was pulled out mid-copy")
        elif outcome:
            say(f"{PULLED} finished without leaving (its files were already stored)")
        reply = self.assign_officer()
        if pulled_out:
            time.sleep(self.args.replug_after)
            self.sim(f"plug {label} {PULLED}")
        if reply is not None:
            try:
                reply.wait(timeout=40)
            except subprocess.TimeoutExpired:
                reply.kill()
                reply.wait()
        return 0

    def assign_officer(self) -> subprocess.Popen[bytes] | None:
        host, port = self.args.broker.rsplit(":", 1)
        topic = f"dock/v1/{DOCK_ID}"
        with open(self.args.reply_log, "wb") as log:
            sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", port, "-t",
                                    f"{topic}/reply/#", "-C", "1", "-W", "30", "-v"],
                                   stdout=log, stderr=subprocess.STDOUT)
        self.helpers.append(sub)
        time.sleep(0.5)  # subscribed before the command goes out
        payload = json.dumps({"id": f"demo-{time.time_ns()}", "args": OFFICER})
        say(f"central service: {topic}/cmd/assign-officer {payload}")
        pub = subprocess.run(["mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t",
                              f"{topic}/cmd/assign-officer", "-m", payload],
                             capture_output=True, text=True, check=False)
        if pub.returncode != 0:
            say(f"mosquitto_pub failed: {pub.stderr.strip()}")
        return sub


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--control", type=Path, required=True, help="the agent's control socket")
    p.add_argument("--sim-in", type=Path, required=True, help="dock-sim's stdin FIFO")
    p.add_argument("--broker", required=True, help="HOST:PORT")
    p.add_argument("--reply-log", type=Path, required=True)
    p.add_argument("--pull", action="store_true", help="unplug BWC00005 by command (no FUSE)")
    p.add_argument("--replug-after", type=float, default=5.0)
    director = Director(p.parse_args())
    # scripts/demo stops its helpers with SIGTERM: leave no mosquitto_sub behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return director.run()
    except KeyboardInterrupt:
        return 0
    finally:
        director.stop_helpers()


if __name__ == "__main__":
    sys.exit(main())
