"""The end-to-end rig: the real `dock-agent` process, a virtual dock, a real broker.

`Rig` owns one dock's worth of state under a temporary directory: the agent's config file
(written in full, so `dockctl --config` sees exactly what the agent sees), the agent
process (its own process group, so `kill -9` takes everything it started), the virtual
dock serving the recorders in this test process, and helpers that read the agent's state
the way an operator would: the read-only SQLite database, the evidence store and dockctl.

Nothing here waits on a timing: every wait polls a condition under a generous hang guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from agent.settings import MqttSettings
from agent.store.db import open_readonly
from hw_sim.dock import VirtualDock
from hw_sim.footage import ExpectedFile, expected_files
from hw_sim.recorder import DEFAULT_FLEET_SECRET, VirtualRecorder
from hw_sim.spec import SIM_USB_PID, SIM_USB_VID, RecorderSpec

PYTHON = sys.executable
HANG_GUARD_S = 60.0
# A clean stop must end well inside a test's own timeout (120 s), so a hang fails with the
# agent's log and stacks instead of a bare pytest-timeout in the test process (the agent
# itself gives up after agent.watchdog.STOP_LIMIT_S, logging its stacks).
STOP_GUARD_S = 45.0


class AgentDied(AssertionError):
    """The agent process exited while a test waited for it."""


# --- waiting --------------------------------------------------------------------------------

async def until(pred: Callable[[], Awaitable[bool] | bool], what: str, *,
                timeout: float = HANG_GUARD_S, interval: float = 0.05,
                agent: AgentProcess | None = None) -> None:
    """Poll `pred` until true; fail naming `what` (and the agent log) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if agent is not None and agent.exited():
            raise AgentDied(f"agent exited ({agent.returncode}) while waiting for {what}\n"
                            f"{agent.log_tail()}")
        if time.monotonic() > deadline:
            tail = agent.log_tail() if agent is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tail}")
        await asyncio.sleep(interval)


# --- the agent process ----------------------------------------------------------------------

class AgentProcess:
    """`python -m agent.cli --config PATH` in its own session (process group)."""

    def __init__(self, config: Path, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.config = config
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "agent already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== agent start #{self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "agent.cli", "--config", str(self.config), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the agent's whole process group and reap it."""
        proc = self.proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def terminate(self, timeout: float = STOP_GUARD_S) -> int:
        """SIGTERM (a clean stop). If it does not stop in time: SIGUSR1 (the agent logs
        every thread's stack), then SIGKILL, and fail with the log tail holding them."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_stacks(proc)
                self.kill9()
                raise AssertionError(f"agent did not stop within {timeout:g} s of SIGTERM\n"
                                     f"{self.log_tail(400)}") from None
        # leftovers of the group (none expected) must not outlive the test
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        last_run = self.log_text().rsplit("===== agent start", 1)[-1]
        if "Timeout (0:" in last_run:  # the agent gave up on its own stop (a hang)
            raise AssertionError(f"the agent's stop hung (exit {proc.returncode})"
                                 f"\n{self.log_tail(400)}")
        return proc.returncode

    def _dump_stacks(self, proc: subprocess.Popen[bytes]) -> None:
        """Ask the agent for its stacks and give it a moment to write them to its log."""
        size = self.log_path.stat().st_size if self.log_path.exists() else 0
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGUSR1)
        deadline, last = time.monotonic() + 5.0, -1
        while time.monotonic() < deadline and proc.poll() is None:
            now = self.log_path.stat().st_size if self.log_path.exists() else 0
            if now > size and now == last:
                return  # the dump began and stopped growing for one poll
            last = now
            time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no agent log)"
        return "----- agent log (tail) -----\n" + "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# --- config ---------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, Path):
        return json.dumps(str(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}"
                               for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def render_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    out = ["# written by tests/e2e"]
    for name, values in sections.items():
        out.append(f"\n[{name}]")
        for key, value in values.items():
            if value is not None:
                out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


# --- the rig --------------------------------------------------------------------------------

# dock-sim's recorders, as the agent's allowlist names them: they pass through the same
# allowlist, bay mapping, pairing and debounce as recorders seen by udev.
SIM_RECORDERS = {"vid": SIM_USB_VID, "pid": SIM_USB_PID, "serial_pattern": "[A-Za-z0-9]{8}"}

@dataclass
class StoredRow:
    id: int
    recorder: str
    source_name: bytes
    relpath: str
    size: int
    blake3: str
    ledger_seq: int | None
    verify_state: str
    wiped: bool


@dataclass
class Rig:
    root: Path
    dock_id: str
    mqtt: MqttSettings | None
    bays: int = 4
    offload: dict[str, Any] = field(default_factory=dict)
    readiness: dict[str, Any] = field(default_factory=dict)
    recorder_cfg: dict[str, Any] = field(default_factory=dict)
    secret: bytes = DEFAULT_FLEET_SECRET
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # more config sections
    dock: VirtualDock | None = None
    agent: AgentProcess = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.root / "state"
        self.store_dir = self.root / "evidence"
        self.run_dir = self.root / "run"
        self.sim_socket = self.run_dir / "sim.sock"
        self.secret_file = self.root / "fleet.secret"
        self.secret_file.write_bytes(self.secret + b"\n")
        self.secret_file.chmod(0o600)
        self.config = self.root / "dock-agent.toml"
        self.write_config()
        self.agent = AgentProcess(self.config, self.root / "agent.log")

    # -- configuration

    def sections(self) -> dict[str, dict[str, Any]]:
        mqtt: dict[str, Any] = {"enabled": False}
        m = self.mqtt
        if m is not None:
            mqtt = {
                "enabled": True, "host": m.host, "port": m.port, "tls": m.tls,
                "ca_file": m.ca_file, "cert_file": m.cert_file, "key_file": m.key_file,
                "client_id": m.client_id, "keepalive_s": 10, "backoff_min_s": 0.2,
                "backoff_max_s": 1.0, "progress_interval_s": 0.5,
            }
        return {
            "dock": {"id": self.dock_id, "timezone": "Asia/Shanghai",
                     "state_dir": self.state_dir, "store_dir": self.store_dir,
                     "runtime_dir": self.run_dir},
            "devices": {"source": "sim", "sim_socket": self.sim_socket, "debounce_ms": 200,
                        "storage_wait_s": 20.0, "allow": [SIM_RECORDERS]},
            "recorder": {"fleet_secret_file": self.secret_file, **self.recorder_cfg},
            "clock": {"tolerance_ms": 1000, "assume_synchronised": True},
            "mount": {"method": "directory"},
            "offload": {"max_concurrent": 2, "verify": "always", "reserve_mib": 0,
                        **self.offload},
            "deadline": {"hours": 24.0},
            "readiness": {"min_battery_percent": 60, "min_free_gb": 1.0, **self.readiness},
            "mqtt": mqtt,
            "health": {"interval_s": 5.0},
            "control": {"socket": self.run_dir / "control.sock"},
            "logging": {"level": "info", "format": "text"},
            **self.extra,
        }

    def write_config(self) -> None:
        self.config.write_text(render_toml(self.sections()))

    # -- the dock

    async def start_dock(self) -> VirtualDock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.dock = VirtualDock(self.bays, self.sim_socket, workdir=self.root / "recorders",
                                secret=self.secret)
        await self.dock.start()
        return self.dock

    async def plug(self, bay: str, spec: RecorderSpec) -> VirtualRecorder:
        assert self.dock is not None
        return await self.dock.plug(bay, spec)

    async def unplug(self, bay: str) -> None:
        assert self.dock is not None
        await self.dock.unplug(bay)

    # -- the agent

    def start_agent(self) -> None:
        self.agent.start()

    async def wait_agent_up(self) -> None:
        sock = self.run_dir / "control.sock"
        await until(lambda: sock.exists() and self.db_path.exists(), "agent control socket",
                    agent=self.agent)

    # -- dockctl

    async def dockctl(self, *args: str, timeout: float = 60.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "agent.dockctl.cli", "--config", str(self.config), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"dockctl {' '.join(args)} hung") from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def dockctl_json(self, *args: str, expect: Sequence[int] = (0,)) -> Any:
        code, out, err = await self.dockctl(*args, "--json")
        assert code in expect, f"dockctl {args} exited {code}: {err}\n{out}"
        return json.loads(out)

    # -- the database, read-only

    @property
    def db_path(self) -> Path:
        return self.state_dir / "dock.sqlite3"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if not self.db_path.exists():
            return []
        conn = open_readonly(self.db_path)
        try:
            return list(conn.execute(sql, tuple(params)).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    async def aquery(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await asyncio.to_thread(self.query, sql, params)

    def ledger(self, recorder: str | None = None) -> list[sqlite3.Row]:
        if recorder is None:
            return self.query("SELECT * FROM ledger ORDER BY seq")
        return self.query("SELECT * FROM ledger WHERE recorder = ? ORDER BY seq", (recorder,))

    def kinds(self, recorder: str) -> list[str]:
        return [r["kind"] for r in self.ledger(recorder)]

    def stored(self, recorder: str | None = None) -> list[StoredRow]:
        sql = ("SELECT id, recorder_serial, source_name, stored_relpath, size, blake3,"
               " ledger_seq, verify_state, wiped FROM evidence_files")
        rows = (self.query(sql + " WHERE recorder_serial = ? ORDER BY id", (recorder,))
                if recorder else self.query(sql + " ORDER BY id"))
        return [StoredRow(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6], r[7], bool(r[8]))
                for r in rows]

    async def astored(self, recorder: str | None = None) -> list[StoredRow]:
        return await asyncio.to_thread(self.stored, recorder)

    async def wait_ledger(self, pred: Callable[[list[sqlite3.Row]], bool], what: str,
                          timeout: float = HANG_GUARD_S) -> None:
        async def check() -> bool:
            rows = await asyncio.to_thread(self.ledger)
            return pred(rows)

        await until(check, what, timeout=timeout, agent=self.agent)

    async def wait_released(self, serial: str, sessions: int = 1,
                            timeout: float = HANG_GUARD_S) -> None:
        """Until the `sessions`-th docking of `serial` has offloaded (or failed) and the
        agent's live view says so."""
        async def check() -> bool:
            if not self.agent.running():
                return False
            code, out, _ = await self.dockctl("status", "--json")
            if code != 0:
                return False
            bays = json.loads(out)["bays"]
            docked = [b for b in bays if b.get("serial") == serial]
            if not docked or docked[0]["state"] not in ("released", "failed"):
                return False
            rows = await self.aquery(
                "SELECT count(*) FROM ledger WHERE recorder = ? AND kind = 'docked'", (serial,))
            return bool(rows[0][0] >= sessions)

        await until(check, f"{serial} released", timeout=timeout, interval=0.3,
                    agent=self.agent)

    # -- the store

    def partial_bytes(self) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.store_dir):
            for n in files:
                if n.startswith(".partial"):
                    try:
                        total += os.lstat(os.path.join(dirpath, n)).st_size
                    except FileNotFoundError:
                        pass
        return total

    def store_files(self) -> list[Path]:
        out: list[Path] = []
        for dirpath, _dirs, files in os.walk(self.store_dir):
            out.extend(Path(dirpath) / n for n in files)
        return out


def hash_file(path: Path) -> str:
    h = blake3()
    with path.open("rb") as fh:
        while block := fh.read(4 << 20):
            h.update(block)
    return h.hexdigest()


async def expected(spec: RecorderSpec) -> list[ExpectedFile]:
    return await asyncio.to_thread(expected_files, spec)


def recorder_files(rec: VirtualRecorder) -> set[bytes]:
    """Footage names still on the recorder's own storage (wherever the tree is now)."""
    root = os.fsencode(rec.storage.root)
    out = set()
    for dirpath, _dirs, files in os.walk(os.path.join(root, b"DCIM")):
        for n in files:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def check_stored_exactly(rig: Rig, spec: RecorderSpec, want: list[ExpectedFile]) -> None:
    """Every file of `spec` stored exactly once, bit for bit, with its custody record."""
    rows = rig.stored(spec.serial)
    by_name: dict[bytes, list[StoredRow]] = {}
    for r in rows:
        by_name.setdefault(r.source_name, []).append(r)
    names = {e.name for e in want}
    assert set(by_name) == names, (
        f"{spec.serial}: stored {sorted(by_name)} but the recorder has {sorted(names)}")
    for e in want:
        (row,) = by_name[e.name]  # exactly once
        assert row.size == e.size and row.blake3 == e.blake3_hex, f"{e.name!r} index differs"
        path = rig.store_dir / row.relpath
        assert path.stat().st_size == e.size
        assert hash_file(path) == e.blake3_hex, f"{path} is not bit-for-bit {e.name!r}"
        assert row.ledger_seq is not None, f"{e.name!r} has no custody record"
    offloaded = rig.query(
        "SELECT seq, json_extract(data, '$.blake3') FROM ledger"
        " WHERE kind = 'offloaded' AND recorder = ?", (spec.serial,))
    assert len(offloaded) == len(want), f"{spec.serial}: {len(offloaded)} offloaded entries"


def check_no_orphans(rig: Rig) -> None:
    """Every file in the store is indexed (no partials left after a completed offload) and
    every index row has its durable file with the recorded hash."""
    rows = rig.stored()
    indexed = {r.relpath for r in rows}
    on_disk = {str(p.relative_to(rig.store_dir)) for p in rig.store_files()}
    assert on_disk == indexed, f"unindexed {on_disk - indexed}, missing {indexed - on_disk}"
    for r in rows:
        assert hash_file(rig.store_dir / r.relpath) == r.blake3


async def stop_rigs(rigs: list[Rig]) -> None:
    """A rig fixture's teardown: kill what a test left running, stop its virtual dock."""
    for rig in rigs:
        if rig.agent.proc is not None and rig.agent.running():
            rig.agent.kill9()
        if rig.dock is not None:
            await rig.dock.stop()
