"""Guest-side helpers for HIL scenarios: the agent and its mount helper as real processes,
udev and mount observation, the agent's database read-only. Runs on the guest's python3."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hil_specs import FLEET_SECRET, RECORDER_VID_PID

from agent.control import ControlClientError, request

PY = sys.executable
AGENT_USER = "dock-agent"
RULES = Path("/etc/udev/rules.d/90-dock-agent.rules")
HELPER_SOCKET = Path("/run/dock-agent-mount/mount.sock")
RUNTIME = Path("/run/dock-agent")


def result(obj: dict[str, Any]) -> None:
    """Hand the scenario's findings to the host."""
    path = os.environ.get("HIL_RESULT")
    if path:
        Path(path).write_text(json.dumps(obj, indent=1, default=str))


def log(msg: str) -> None:
    print(f"[{time.monotonic():9.2f}] {msg}", flush=True)


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def config_text(name: str, *, debounce_ms: int = 1500, wipe: bool = False,
                extra: str = "") -> str:
    vid, pid = RECORDER_VID_PID
    state = Path("/var/lib/dock-agent") / name
    return f"""
[dock]
id = "hil-dock"
timezone = "Asia/Shanghai"
state_dir = "{state}"
store_dir = "{state}/evidence"
runtime_dir = "{RUNTIME}"

[devices]
source = "udev"
debounce_ms = {debounce_ms}
storage_wait_s = 90.0

[[devices.allow]]
vid = "{vid}"
pid = "{pid}"
serial_pattern = "^BWC[0-9]{{5}}$"

[recorder]
fleet_secret_file = "/etc/dock-agent/fleet.secret"
command_timeout_s = 5.0

[clock]
tolerance_ms = 1000
assume_synchronised = true

[mount]
method = "helper"
helper_socket = "{HELPER_SOCKET}"

[offload]
verify = "always"
fdatasync_every_mib = 8
reserve_mib = 16
wipe_after_offload = {"true" if wipe else "false"}

[mqtt]
enabled = false

[logging]
level = "debug"
format = "text"
""" + extra


def under_systemd() -> bool:
    return Path("/proc/1/comm").read_text().strip() == "systemd"


UNITS = ("dock-mount.socket", "dock-mount.service", "dock-agent.service")


class Agent:
    """dock-agent (as its own unprivileged user) plus the root mount helper, from /mnt/src.

    Under systemd they run from the project's own units (systemd/), installed the way
    packaging/install.sh does; otherwise as plain processes with the same users and options.
    """

    def __init__(self, name: str, logdir: Path, *, debounce_ms: int = 1500,
                 wipe: bool = False, env: dict[str, str] | None = None,
                 extra_config: str = "") -> None:
        self.name = name
        self.extra_config = extra_config  # more config sections (TOML text)
        self.wipe = wipe
        self.env = env or {}  # extra environment of the agent (e.g. crash-point hooks)
        self.logdir = logdir
        self.systemd = under_systemd()
        self.config = Path("/etc/dock-agent") / (
            "dock-agent.toml" if self.systemd else f"{name}.toml")
        self.debounce_ms = debounce_ms
        self.helper: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.state_dir = Path("/var/lib/dock-agent") / name
        self.started_at = time.time()
        self.control = RUNTIME / "control.sock"

    def install(self) -> None:
        """Config, fleet secret, directories, and the udev rules the agent generates."""
        user = pwd.getpwnam(AGENT_USER)
        etc = Path("/etc/dock-agent")  # as packaging/install.sh makes it
        etc.mkdir(exist_ok=True)
        os.chown(etc, 0, user.pw_gid)
        etc.chmod(0o750)
        secret = etc / "fleet.secret"
        secret.write_bytes(FLEET_SECRET + b"\n")
        os.chown(secret, 0, user.pw_gid)
        secret.chmod(0o640)
        self.config.write_text(config_text(self.name, debounce_ms=self.debounce_ms,
                                           extra=self.extra_config,
                                           wipe=self.wipe))
        os.chown(self.config, 0, user.pw_gid)
        self.config.chmod(0o640)
        for d in (Path("/var/lib/dock-agent"), self.state_dir, RUNTIME):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        rules = subprocess.run([PY, "-m", "agent.cli", "--config", str(self.config),
                                "--udev-rules"], capture_output=True, check=True).stdout
        RULES.write_bytes(rules)
        subprocess.run(["udevadm", "control", "--reload"], check=True)
        if self.systemd:
            units = Path("/etc/systemd/system")
            for unit in UNITS:
                shutil.copyfile(Path("/mnt/src/systemd") / unit, units / unit)
                if unit.endswith(".service"):  # test-only: reuse the boot's bytecode
                    dropin = units / f"{unit}.d"
                    dropin.mkdir(exist_ok=True)
                    extra = "".join(f"Environment={k}={v}\n" for k, v in self.env.items()
                                    if unit == "dock-agent.service")
                    (dropin / "hil.conf").write_text(
                        f"[Service]\nEnvironment=PYTHONPYCACHEPREFIX="
                        f"{os.environ.get('PYTHONPYCACHEPREFIX', '/run/hil-pycache')}\n{extra}")
            subprocess.run(["systemctl", "daemon-reload"], check=True)

    async def start(self, timeout_s: float = 120.0) -> float:
        """Start helper and agent; returns seconds until the control socket answered."""
        self.install()
        self.started_at = time.time() - 1
        t0 = time.monotonic()
        if self.systemd:
            # Type=notify: returns once the agent said READY=1 (or failed to start).
            started = await asyncio.to_thread(
                subprocess.run, ["systemctl", "start", "dock-mount.socket", "dock-agent.service"],
                capture_output=True, text=True, check=False)
            if started.returncode != 0:
                space = subprocess.run(
                    "df -h / /var/lib/dock-agent /tmp; du -xsh /var/lib/dock-agent/* /tmp/* "
                    "/srv /var/log 2>/dev/null | sort -h | tail -8",
                    shell=True, capture_output=True, text=True, check=False).stdout
                raise RuntimeError(f"systemctl start failed: {started.stderr}\n"
                                   f"{space}\n{self.journal()}")
            await self._wait_control(t0, timeout_s)
            return time.monotonic() - t0
        env = {**os.environ, "PYTHONPATH": "/mnt/src"}
        self.helper = subprocess.Popen(
            [PY, "-m", "agent.mount.helper", "--socket", str(HELPER_SOCKET),
             "--mount-root", str(RUNTIME / "media"), "--owner", AGENT_USER],
            stdout=(self.logdir / f"{self.name}-helper.log").open("wb"),
            stderr=subprocess.STDOUT, env=env)
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={AGENT_USER}", f"--regid={AGENT_USER}", "--init-groups",
             "--", PY, "-m", "agent.cli", "--config", str(self.config)],
            stdout=(self.logdir / f"{self.name}-agent.log").open("wb"),
            stderr=subprocess.STDOUT, env={**env, **self.env, "HOME": str(self.state_dir)})
        await self._wait_control(t0, timeout_s)
        return time.monotonic() - t0

    def _alive(self) -> bool:
        if self.systemd:
            return subprocess.run(["systemctl", "is-active", "--quiet", "dock-agent.service"],
                                  check=False).returncode == 0
        return self.proc is not None and self.proc.poll() is None

    def journal(self) -> str:
        return subprocess.run(["journalctl", "--no-pager", "-o", "short-monotonic",
                               f"--since=@{int(self.started_at)}",
                               "-u", "dock-agent.service", "-u", "dock-mount.service",
                               "-u", "dock-mount.socket"],
                              capture_output=True, text=True, check=False).stdout

    async def _wait_control(self, t0: float, timeout_s: float) -> None:
        while True:
            if not self._alive():
                raise RuntimeError(f"agent is not running:\n{self.log_tail()}")
            with contextlib.suppress(ControlClientError, OSError):
                await asyncio.to_thread(request, self.control, "status", 5.0)
                return
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"agent not answering after {timeout_s} s:\n{self.log_tail()}")
            await asyncio.sleep(0.3)

    def log_tail(self, n: int = 40) -> str:
        if self.systemd:
            return "\n".join(self.journal().splitlines()[-n:])
        try:
            lines = (self.logdir / f"{self.name}-agent.log").read_text(errors="replace")
            return "\n".join(lines.splitlines()[-n:])
        except OSError:
            return ""

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(request, self.control, "status", 10.0)

    async def bay(self, serial: str) -> dict[str, Any] | None:
        for entry in (await self.status()).get("bays", []):
            if serial in (entry.get("serial"), entry.get("key")):
                return dict(entry)
        return None

    async def wait_state(self, serial: str, states: set[str], timeout_s: float) -> dict[str, Any]:
        """Poll the agent until the recorder's session is in one of `states`."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if not self._alive():
                raise RuntimeError(f"agent died:\n{self.log_tail()}")
            last = await self.bay(serial)
            if last is not None and last.get("state") in states:
                return last
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{serial} not in {states} after {timeout_s} s; last {last}\n"
                           f"{self.log_tail()}")

    async def wait_gone(self, serial: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.bay(serial) is None:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{serial} still docked after {timeout_s} s\n{self.log_tail()}")

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Read the agent's database read-only (WAL: safe while it runs)."""
        db = self.state_dir / "dock.sqlite3"
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()

    def evidence(self, serial: str) -> list[dict[str, Any]]:
        rows = self.query("SELECT source_name, size, blake3, stored_relpath FROM evidence_files "
                          "WHERE recorder_serial = ? ORDER BY id", serial)
        for r in rows:
            r["source_name"] = bytes(r["source_name"]).decode("utf-8", "replace")
        return rows

    def ledger_kinds(self, serial: str | None = None) -> list[str]:
        if serial is None:
            return [r["kind"] for r in self.query("SELECT kind FROM ledger ORDER BY seq")]
        return [r["kind"] for r in self.query(
            "SELECT kind FROM ledger WHERE recorder = ? ORDER BY seq", serial)]

    def stored_file_hashes(self, serial: str) -> dict[str, str]:
        """BLAKE3 of each stored copy as it is on the evidence disk now."""
        from blake3 import blake3

        out = {}
        store = self.state_dir / "evidence"
        for r in self.evidence(serial):
            h = blake3()
            with (store / r["stored_relpath"]).open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            out[r["source_name"]] = h.hexdigest()
        return out

    def dockctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "agent.dockctl.cli", "--config", str(self.config),
                               *args], capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": "/mnt/src"})

    async def stop(self) -> int | None:
        """Stop (SIGTERM) and return the agent's exit status."""
        if self.systemd:
            await asyncio.to_thread(subprocess.run, ["systemctl", "stop", *reversed(UNITS)],
                                    check=False)
            status = subprocess.run(["systemctl", "show", "-p", "ExecMainStatus", "--value",
                                     "dock-agent.service"], capture_output=True, text=True,
                                    check=False).stdout.strip()
            (self.logdir / f"{self.name}-journal.log").write_text(self.journal())
            subprocess.run(["systemctl", "reset-failed"], check=False, capture_output=True)
            return int(status) if status.isdigit() else None
        rc = None
        for proc in (self.proc, self.helper):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self.proc is not None:
            rc = self.proc.returncode
        return rc


class MountWatch:
    """Samples /proc/self/mountinfo and block-device read-only flags while a scenario runs,
    so a test can assert on every mount of a USB disk the agent ever made."""

    def __init__(self) -> None:
        self.mounts: dict[tuple[str, str], dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._baseline: set[tuple[str, str]] = set()  # left over from earlier scenarios

    def _sample(self) -> None:
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        for line in lines:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3 or not rfields[1].startswith("/dev/sd"):
                continue
            source, point = rfields[1], fields[4]
            key = (source, point)
            if key in self.mounts or key in self._baseline:
                continue
            disk = Path(source).name.rstrip("0123456789")
            try:
                dev_ro = Path(f"/sys/class/block/{Path(source).name}/ro").read_text().strip()
            except OSError:
                dev_ro = "?"
            self.mounts[key] = {"source": source, "disk": disk, "point": point,
                                "fstype": rfields[0], "options": fields[5],
                                "super_options": rfields[2], "device_ro": dev_ro}

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self._sample)
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._sample()
        self._baseline, self.mounts = set(self.mounts), {}
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[dict[str, Any]]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()
        return list(self.mounts.values())


def udev_props(devnode: str) -> dict[str, str]:
    out = subprocess.run(["udevadm", "info", "--query=property", f"--name={devnode}"],
                         capture_output=True, text=True, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def usb_parent(devnode: str) -> str | None:
    """sysfs path of the usb_device a tty or disk belongs to."""
    out = subprocess.run(["udevadm", "info", "--query=path", f"--name={devnode}"],
                         capture_output=True, text=True, check=False).stdout.strip()
    if not out:
        return None
    path = Path("/sys" + out).resolve()
    for p in [path, *path.parents]:
        if (p / "idVendor").exists() and (p / "busnum").exists():
            return str(p)
    return None


def clear_leftover_mounts(root: Path = Path("/run/dock-agent/media")) -> list[str]:
    """Lazily unmount whatever a failed scenario left under the agent's mount root, so the
    next scenario starts clean; returns what was there."""
    left = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(f"{root}/")]
    for point in left:
        subprocess.run(["umount", "-l", point], check=False)
    return left
