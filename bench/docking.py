"""Plug to docked: how long from a simulated plug until MQTT says so, while other bays are busy.

    python -m bench.docking [--plugs N] [--busy B] [--busy-size-mib S] [--busy-rate-mb-s R]
                            [--busy-throttle auto|kernel|fuse] [--broker-nodelay]
                            [--workdir DIR] [--agent-log FILE] --json

The defaults are the "24 other bays busy" case: 50 plugs while 24 bays offload at 3 MB/s
each (`python -m bench.docking --json`). The real agent process (`agent.cli`) runs against a
private mosquitto (plain TCP on 127.0.0.1) and an in-process dock-sim with `busy + 1` bays.
The agent is waited for until it is online on MQTT; then the `busy` recorders are plugged
and waited for until every one of them offloads (storage read at `busy-rate-mb-s`, held by
the kernel's block throttle where it can, else by the FUSE view: `busy_throttle`).
Then one recorder is plugged into the last bay `plugs` times, each time waited for until it
is released and unplugged again. The agent's unplug debounce is shortened
(`devices.debounce_ms`, which is not on the plug path) so that all plugs fit inside the
busy bays' offload; `busy_offloading_min` says how many busy bays were still offloading at
the least busy plug. Per plug, measured from the moment the simulator announces it (its
udev-like device records are out; the simulator's own making of the recorder and its
footage comes before and is not counted), on the same monotonic clock as the MQTT
subscriber's receive time:
  docked      the `docked` custody event or the retained state with `docked: true`
              (its birth), whichever arrives first (each alone: `docked_event_ms_*`,
              `docked_state_ms_*`);
  identified  the first state at or past `identified` (identity and officer read; the
              `identified` custody event alone: `identified_event_ms_*`);
  first_byte  the first progress message with `bytes_done > 0`.
Prints one JSON object with p50/p99/max of each in milliseconds; timings are facts to
read, never pass/fail criteria. `--agent-log FILE` keeps the agent's log (debug level).

The broker is mosquitto with its defaults for sending, which include Nagle's algorithm on
its sockets to subscribers: a small state message that follows an unacknowledged QoS 0
progress message can wait for the subscriber's delayed ACK (up to ~40 ms; p90 ~35 ms with
24 busy bays). That wait is the broker's and the subscriber's, not the dock's;
`--broker-nodelay` sets mosquitto's `set_tcp_nodelay true` to measure without it
(`broker_tcp_nodelay` in the output says which was measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.outbox import _start_broker

STATES = ("detected", "authenticated", "identified", "clock_checked", "status_read",
          "storage_unlocked", "mounted", "offloading", "released", "failed", "removed")
DOCK = "bench-dock"
DEBOUNCE_MS = 100  # unplugs only: a plug is never debounced


class Traffic:
    """Every message of the dock's topics with its receive time (paho's network thread)."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe(f"dock/v1/{DOCK}/#", qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: Any) -> None:
        t = time.monotonic()
        try:
            payload = json.loads(msg.payload) if msg.payload else {}
        except ValueError:
            payload = {}
        with self._lock:
            self.messages.append((t, str(msg.topic), payload))

    def since(self, t0: float, serial: str = "") -> list[tuple[float, str, dict[str, Any]]]:
        """Messages received from `t0` on (about one recorder, or all with no serial)."""
        want = f"/recorder/{serial}/" if serial else "/"
        with self._lock:
            return [m for m in self.messages if m[0] >= t0 and want in m[1]]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _marks(msgs: list[tuple[float, str, dict[str, Any]]], serial: str) -> dict[str, float]:
    """When each milestone was first seen in one plug's messages."""
    out: dict[str, float] = {}
    for t, topic, p in msgs:
        if topic.endswith("/events/custody") and p.get("subject") == serial:
            kind = (p.get("payload") or {}).get("kind")
            if kind == "docked":  # the custody event of the docking
                out.setdefault("docked_event", t)
                out["docked"] = min(out.get("docked", t), t)
            elif kind == "identified":
                out.setdefault("identified_event", t)
        if f"/recorder/{serial}/" not in topic:
            continue
        if topic.endswith("/state") and p.get("docked") is True:
            out.setdefault("docked_state", t)
            out["docked"] = min(out.get("docked", t), t)
            state = p.get("state")
            if state in STATES and STATES.index(state) >= STATES.index("identified"):
                out.setdefault("identified", t)
            if state in ("released", "failed"):
                out.setdefault("released", t)
        if topic.endswith("/progress") and int(p.get("bytes_done") or 0) > 0:
            out.setdefault("first_byte", t)
    return out


def _config(work: Path, port: int, bays: int, log_level: str) -> Path:
    from hw_sim.recorder import DEFAULT_FLEET_SECRET
    from hw_sim.spec import SIM_USB_PID, SIM_USB_VID

    secret = work / "fleet.secret"
    secret.write_bytes(DEFAULT_FLEET_SECRET + b"\n")
    secret.chmod(0o600)
    run = work / "run"
    run.mkdir()
    conf = work / "dock-agent.toml"
    conf.write_text(f"""
[dock]
id = "{DOCK}"
timezone = "UTC"
state_dir = "{work / 'state'}"
store_dir = "{work / 'store'}"
runtime_dir = "{run}"
[devices]
source = "sim"
sim_socket = "{run / 'sim.sock'}"
storage_wait_s = 60.0
debounce_ms = {DEBOUNCE_MS}
[[devices.allow]]
vid = "{SIM_USB_VID}"
pid = "{SIM_USB_PID}"
[recorder]
fleet_secret_file = "{secret}"
[clock]
assume_synchronised = true
[mount]
method = "directory"
[offload]
max_concurrent = {bays}
verify = "off"
reserve_mib = 0
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
tls = false
progress_interval_s = 0.5
[control]
socket = "{run / 'control.sock'}"
[logging]
level = "{log_level}"
""")
    return conf


async def _wait(pred: Any, what: str, timeout: float = 120.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)
    del what


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 1)


def _busy(traffic: Traffic, t0: float) -> int:
    """How many busy bays sent offload progress since `t0`."""
    return len({m[1] for m in traffic.since(t0)
                if m[1].endswith("/progress") and "/recorder/BUSY" in m[1]})


def _offloading(traffic: Traffic) -> int:
    """How many busy bays' latest retained state is `offloading` now."""
    latest: dict[str, object] = {}
    for _, topic, p in traffic.since(0.0, ""):
        if "/recorder/BUSY" in topic and topic.endswith("/state"):
            latest[topic] = p.get("state")
    return sum(1 for state in latest.values() if state == "offloading")


def _online(traffic: Traffic) -> bool:
    return any(m[1].endswith("/status") and m[2].get("state") == "online"
               for m in traffic.since(0.0))


async def _plugs(dock: Any, traffic: Traffic, bay: str, n: int
                 ) -> tuple[list[dict[str, float]], list[int]]:
    """Per plug: its milestones; and how many busy bays offloaded at each plug."""
    from hw_sim.spec import FootageSpec, RecorderSpec

    out: list[dict[str, float]] = []
    busy: list[int] = []
    for i in range(n):
        busy.append(_offloading(traffic))
        spec = RecorderSpec(serial=f"PLG{i:05d}", storage_total_bytes=64 << 20,
                            footage=FootageSpec(count=1, size_bytes=4 << 20, seed=11 + i))
        before = time.monotonic()
        await dock.plug(bay, spec)  # makes the recorder (its footage), then announces it
        t0 = time.monotonic()  # its device records are out: the plug as udev would tell it
        await _wait(lambda b=before, s=spec.serial: "released" in _marks(traffic.since(b), s),
                    "released")
        out.append({k: v - t0 for k, v in _marks(traffic.since(before), spec.serial).items()})
        t1 = time.monotonic()
        await dock.unplug(bay)
        await _wait(lambda t1=t1, s=spec.serial: any(
            m[1].endswith("/state") and m[2].get("docked") is False
            for m in traffic.since(t1, s)), "undocked")
    return out, busy


def _busy_throttle(dock: Any) -> str:
    """What held the busy recorders' rate: "kernel" when their storage was a volume."""
    recorders = list(dock.recorders.values())
    return "kernel" if any(r.storage.volume is not None for r in recorders) else "fuse"


async def _run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from hw_sim.dock import VirtualDock
    from hw_sim.spec import Faults, FootageSpec, RecorderSpec

    broker, port = _start_broker(work, tcp_nodelay=args.broker_nodelay)
    bays = [str(i) for i in range(args.busy + 1)]
    conf = _config(work, port, len(bays), "debug" if args.agent_log else "warning")
    dock = VirtualDock(bays, work / "run" / "sim.sock", workdir=work / "recorders")
    await dock.start()
    log_to = args.agent_log.open("wb") if args.agent_log else subprocess.DEVNULL
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(conf)],
                             stdout=log_to, stderr=subprocess.STDOUT if args.agent_log
                             else (work / "agent.log").open("wb"), start_new_session=True)
    traffic = Traffic(port)
    throttle: str | None = None
    try:
        await _wait(lambda: _online(traffic), "agent online", timeout=120)
        size = args.busy_size_mib << 20
        faults = (Faults(read_rate_mb_s=args.busy_rate_mb_s, read_rate_by=args.busy_throttle)
                  if args.busy_rate_mb_s else Faults())
        for i in range(args.busy):
            await dock.plug(str(i), RecorderSpec(
                serial=f"BUSY{i:04d}", storage_total_bytes=2 * size + 1, faults=faults,
                footage=FootageSpec(count=2, size_bytes=size, seed=7)))
        throttle = _busy_throttle(dock) if args.busy_rate_mb_s and args.busy else None
        t_busy = time.monotonic()
        await _wait(lambda: _busy(traffic, t_busy - 600) >= args.busy, "busy bays",
                    timeout=600)
        results, busy_at_plug = await _plugs(dock, traffic, bays[-1], args.plugs)
        still_busy = _busy(traffic, time.monotonic() - 2.0)
    finally:
        traffic.close()
        agent.terminate()
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
        await dock.stop()
        broker.terminate()
        broker.wait()
    keys = ("docked", "identified", "first_byte")
    detail = ("docked_event", "docked_state", "identified_event")
    return {
        **{f"{k}_ms_{q}": _pct([r[k] for r in results if k in r], p)
           for k in keys + detail for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "plugs": len(results), "missing": {k: sum(1 for r in results if k not in r)
                                           for k in keys},
        "busy_bays": args.busy, "busy_bays_still_offloading_at_end": still_busy,
        "busy_offloading_min": min(busy_at_plug, default=0),
        "busy_rate_mb_s": args.busy_rate_mb_s, "broker_tcp_nodelay": args.broker_nodelay,
        "busy_throttle": throttle,
        "released_ms_p50": _pct([r["released"] for r in results if "released" in r], 0.5),
        "mean_identified_ms": round(statistics.mean(
            [r["identified"] for r in results if "identified" in r] or [0.0]) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--plugs", type=int, default=50)
    p.add_argument("--busy", type=int, default=24, help="other bays offloading meanwhile")
    p.add_argument("--busy-size-mib", type=int, default=128, help="each of 2 files per busy bay")
    p.add_argument("--busy-rate-mb-s", type=float, default=3.0,
                   help="busy recorders' read rate (0: unlimited, no FUSE)")
    p.add_argument("--busy-throttle", choices=["auto", "kernel", "fuse"], default="auto",
                   help="who holds the busy rate: the kernel's block throttle, the FUSE view,"
                   " or auto: the kernel where it can")
    p.add_argument("--broker-nodelay", action="store_true",
                   help="the broker sends to subscribers without Nagle's delay")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--agent-log", type=Path, default=None,
                   help="keep the agent's log here (debug level)")
    p.add_argument("--json", action="store_true", help="print JSON (the only output format)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bd-", dir=args.workdir or "/var/tmp"))
    try:
        result = asyncio.run(_run(work, args))
        result.update(loadavg_before=load, loadavg_after=os.getloadavg(),
                      cpus=os.cpu_count())
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
