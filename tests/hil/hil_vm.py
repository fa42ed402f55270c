"""Host side of the HIL guest: boot the cached image under qemu (TCG, no network) and run
scenario scripts in it over the 9p exchange directory (see guest/runner.py)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class GuestError(Exception):
    pass


@dataclass
class GuestResult:
    rc: int
    result: dict[str, Any]
    log: str
    elapsed_s: float


def build_image() -> Path:
    """The cached image directory (built first if needed; prints progress to stderr)."""
    out = subprocess.run([str(ROOT / "scripts/hil/build-image")], stdout=subprocess.PIPE,
                         text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


class GuestVM:
    def __init__(self, image: Path, xchg: Path, *, memory_mib: int = 1536, cpus: int = 2,
                 src: Path = ROOT, systemd: bool = False, extra: list[str] | None = None,
                 console: str = "console.log") -> None:
        self.image = image
        self.xchg = xchg
        self.console = xchg / console
        self.extra = extra or []  # more qemu arguments (e.g. a state disk)
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.src = src
        self.systemd = systemd  # boot systemd; the agent then runs from its own units
        self.proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self.boot_s: float | None = None
        self.ready: dict[str, Any] = {}

    def command(self) -> list[str]:
        qemu = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        append = " ".join([
            "console=ttyS0", "panic=-1", "loglevel=4",
            # Removable media (the recorder's LUN before and after unlock) are only noticed
            # when the host polls for media changes; udisks would turn this on on a desktop.
            "block.events_dfl_poll_msecs=500",
        ] + (["hil.systemd=1", "systemd.unit=hil.target", "systemd.show_status=0"]
             if self.systemd else []))
        return [
            qemu, "-accel", "tcg,thread=multi", "-m", str(self.memory_mib),
            "-smp", str(self.cpus), "-nic", "none", "-no-reboot",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}",
            "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.gz"),
            "-append", append,
            "-drive", f"file={self.image / 'rootfs.img'},format=raw,if=virtio,snapshot=on",
            "-virtfs", f"local,path={self.src},mount_tag=src,security_model=none,readonly=on",
            "-virtfs", f"local,path={self.xchg},mount_tag=xchg,security_model=none",
            *self.extra,
        ]

    def start(self, timeout_s: float = 300.0) -> None:
        self.xchg.mkdir(parents=True, exist_ok=True)
        for stale in ("ready.json",):
            (self.xchg / stale).unlink(missing_ok=True)
        started = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = self.xchg / "ready.json"
        while not ready.exists():
            if self.proc.poll() is not None:
                raise GuestError(f"qemu exited with {self.proc.returncode}:\n{self.console_tail()}")
            if time.monotonic() - started > timeout_s:
                self.kill()
                raise GuestError(f"guest not ready after {timeout_s} s:\n{self.console_tail()}")
            time.sleep(0.2)
        self.boot_s = time.monotonic() - started
        self.ready = json.loads(ready.read_text())

    def console_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no console output)"

    def submit(self, argv: list[str], timeout_s: float = 600.0) -> str:
        """Start `python3 argv...` in the guest without waiting; see `result_of`."""
        return self._submit({"argv": argv, "timeout": timeout_s})

    def result_of(self, req_id: str) -> GuestResult | None:
        """The finished request's result, or None while it runs."""
        res = self.xchg / "res"
        done = res / f"{req_id}.json"
        if not done.exists():
            return None
        status = json.loads(done.read_text())
        log = (res / f"{req_id}.log").read_text(errors="replace") if (
            res / f"{req_id}.log").exists() else ""
        result_file = res / f"{req_id}.result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        return GuestResult(int(status["rc"]), result, log, float(status.get("elapsed_s", 0)))

    def _submit(self, req: dict[str, Any]) -> str:
        req_id = f"{next(self._ids):04d}"
        tmp = self.xchg / "req" / f"{req_id}.tmp"
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps(req))
        os.replace(tmp, tmp.with_suffix(".json"))
        return req_id

    def run(self, argv: list[str], timeout_s: float = 600.0) -> GuestResult:
        """Run `python3 argv...` in the guest (cwd = working tree) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            raise GuestError("guest is not running")
        req_id = self.submit(argv, timeout_s)
        deadline = time.monotonic() + timeout_s + 60
        while (done := self.result_of(req_id)) is None:
            if self.proc.poll() is not None:
                raise GuestError(f"guest died during {argv}:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise GuestError(f"no answer to {argv} in {timeout_s} s")
            time.sleep(0.2)
        return done

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._submit({"poweroff": True})
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
