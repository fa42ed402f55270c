"""Power cuts on the HIL machine: the host is the dock's power switch.

A trial docks one recorder in a fresh guest and cuts the power one or more times during
its offload, each time at a step chosen in advance (the agent's crash points, see
agent/crashpoint.py: the agent stops at that step and the host cuts) or after a random
delay; after each cut the guest boots again and the agent resumes. The last boot runs to
the end, and the host checks what a custodian needs: every original is still on the
recorder or stored bit for bit with its ledger record, nothing was wiped without a
verified stored copy, `dockctl verify --deep` passes.

Why the disk loses what a real one would (docs/power-cut.md): the dock's state (database
and evidence store) is on its own virtio disk served by nbdkit with the cache filter in
`cache=writeback` mode. Writes the guest has not flushed stay in nbdkit's cache; a FLUSH
(or a FUA write) from the guest writes them through to the image file. The power cut
kills nbdkit first (its cache, a deleted temporary file, is gone with it), then qemu (the
guest's page cache is gone). So a missing fsync/fdatasync loses data even when the guest
kernel had already written it to the "disk", exactly as with a drive's volatile write
cache. qemu's own cache modes cannot do this: with cache=writeback or unsafe the host's
page cache survives qemu's death and keeps every write, flushed or not; with
cache=none/directsync every completed write is already on the host's disk.

The recorder's flash must survive the cut too: its firmware keeps its files in the
exchange directory on the host (9p, written through), and before the next boot the
recorder's FAT image is brought in line with it (files the firmware deleted are deleted).

Run from scripts/hil/power-cut (campaign) or tests/hil/test_hil_power.py (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent / "guest"))  # the guest helpers (hil_specs)

from blake3 import blake3
from hil_specs import recorder_spec

from agent.crashpoint import POINTS
from hw_sim.storage import RecorderStorage

from .hil_fat import ImageFile, build_fat_image, delete_files, image_files
from .hil_vm import ROOT, GuestError, GuestVM, build_image

MIB = 1 << 20
SERIAL = "BWC00077"
# Files 1 and 3 are below the agent's fdatasync interval (8 MiB in the guest config),
# file 2 above it, so a copy has a synced mid-file point to resume from.
SIZES = [2 * MIB, 12 * MIB + 4321, 1 * MIB + 77]
# What a deliberate cut names: the moment in the protocol it stands for.
MOMENTS = {
    "copy_synced": "mid-file, after a periodic fdatasync",
    "copy_complete": "file copied and fsynced, before the rename",
    "installed": "after the rename, before the ledger commit",
    "committed": "after the ledger commit, before verification",
    "verified": "after verification, before the wipe",
    "wipe_intent": "during a wipe: intent recorded, delete not yet sent",
    "wipe_sent": "during a wipe: the recorder deleted, not yet recorded",
    "wiped": "after a wipe was recorded",
}
assert set(MOMENTS) <= set(POINTS)


@dataclass(frozen=True)
class Cut:
    """One power cut: at the n-th arrival at a crash point (`hold` = "point:n"), or
    `delay_s` after the offload started (a random moment)."""

    hold: str | None = None
    delay_s: float | None = None

    def describe(self) -> str:
        if self.hold is not None:
            point, _, nth = self.hold.partition(":")
            return f"{point}#{nth} ({MOMENTS.get(point, point)})"
        return f"random, {self.delay_s:.1f} s after the offload started"


@dataclass
class TrialReport:
    name: str
    cuts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class StateDisk:
    """The dock's state disk: a raw ext4 image behind nbdkit's write-back cache."""

    def __init__(self, workdir: Path, size_mib: int = 256) -> None:
        self.dir = workdir
        self.image = workdir / "state.img"
        self.socket = workdir / "nbd.sock"
        self.size_mib = size_mib
        self.proc: subprocess.Popen[bytes] | None = None

    def create(self, *, mkfs: bool = True) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as fh:
            fh.truncate(self.size_mib * MIB)
        if mkfs:
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "dockstate", str(self.image)],
                           check=True)

    def start(self, timeout_s: float = 30.0) -> None:
        cache = self.dir / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["nbdkit", "--foreground", "--unix", str(self.socket), "--filter=cache",
             "file", f"file={self.image}", "cache=writeback"],
            env={**os.environ, "TMPDIR": str(cache)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=(self.dir / "nbdkit.log").open("ab"))
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise GuestError(f"nbdkit did not start: {(self.dir / 'nbdkit.log').read_text()}")
            time.sleep(0.05)

    def qemu_args(self) -> list[str]:
        # A high PCI slot: the root image (the initramfs mounts /dev/vda) probes first.
        # cache=writeback: the guest sees a volatile write cache and sends FLUSH/FUA, which
        # qemu passes to nbdkit (no-flush stays off; cache=unsafe would drop them).
        return [
            "-drive", f"if=none,id=dockstate,format=raw,cache=writeback,file.driver=nbd,"
                      f"file.server.type=unix,file.server.path={self.socket}",
            "-device", "virtio-blk-pci,drive=dockstate,serial=dockstate,write-cache=on,addr=0x10",
        ]

    def cut(self) -> None:
        """Power gone: the write-back cache with every unflushed write is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """After a clean guest shutdown (everything flushed): stop serving."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _blake3_file(path: Path) -> str:
    h = blake3()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def recorder_flash(xchg: Path, serial: str) -> dict[str, str]:
    """What the recorder's firmware holds now: path -> BLAKE3."""
    backing = xchg / "recorders" / serial / "backing"
    return {p.relative_to(backing).as_posix(): _blake3_file(p)
            for p in sorted(backing.rglob("*")) if p.is_file()}


def check_custody(originals: list[ImageFile], flash: dict[str, str],
                  r: dict[str, Any]) -> list[str]:
    """The custodian's invariants after the agent finished; a list of violations."""
    problems: list[str] = []
    offloaded = {e["data"].get("file_id") for e in r["ledger"] if e["kind"] == "offloaded"}
    wiped = {e["data"].get("file_id") for e in r["ledger"] if e["kind"] == "wiped"}
    verified_ok = {e["data"].get("file_id") for e in r["ledger"]
                   if e["kind"] == "verified" and e["data"].get("ok", True)}
    for f in originals:
        rows = [e for e in r["evidence"] if e["source_name"] == f.name]
        for e in rows:
            on_disk = r["stored_hashes"].get(str(e["id"]))
            if on_disk != e["blake3"]:
                problems.append(f"{f.name}: stored copy {e['stored_relpath']} hashes to "
                                f"{on_disk}, its record says {e['blake3']}")
            if e["blake3"] != f.blake3 or e["size"] != f.size:
                problems.append(f"{f.name}: recorded as {e['size']} bytes {e['blake3']}, "
                                f"the original is {f.size} bytes {f.blake3}")
            if e["id"] not in offloaded:
                problems.append(f"{f.name}: evidence row {e['id']} has no offloaded entry")
        good = [e for e in rows if e["blake3"] == f.blake3 and e["size"] == f.size
                and r["stored_hashes"].get(str(e["id"])) == f.blake3 and e["id"] in offloaded]
        on_recorder = flash.get(f.name)
        if on_recorder is not None and on_recorder != f.blake3:
            problems.append(f"{f.name}: the recorder's copy was altered")
        if on_recorder is None:
            if not good:
                problems.append(f"{f.name}: LOST - gone from the recorder, no good stored copy")
            elif not any(e["verify_state"] == "ok" and e["id"] in verified_ok for e in good):
                problems.append(f"{f.name}: wiped without a verified stored copy")
            elif not any(e["wiped"] and e["id"] in wiped for e in good):
                problems.append(f"{f.name}: gone from the recorder but no wipe recorded")
        elif not good:
            problems.append(f"{f.name}: not stored after the agent finished")
    for e in r["evidence"]:
        if e["wiped"] and e["source_name"] in flash:
            problems.append(f"{e['source_name']}: recorded as wiped but still on the recorder")
    # Every docking but the one still going has its end in the ledger, observed or not.
    ended = {e["seq"] for e in r["ledger"] if e["kind"] == "undocked"}
    closed = {e["data"].get("docked_seq") for e in r["ledger"] if e["kind"] == "undocked"}
    docked = [e["seq"] for e in r["ledger"] if e["kind"] == "docked"]
    for seq in docked[:-1]:
        nxt = min((s for s in ended if s > seq), default=None)
        if seq not in closed and (nxt is None or any(seq < d < nxt for d in docked)):
            problems.append(f"the docking at ledger seq {seq} never ended in the ledger")
    if r.get("final_state") != "released":
        problems.append(f"final state {r.get('final_state')}: {r.get('offload_result')} "
                        f"{r.get('faults')}")
    if r.get("verify_rc") != 0:
        problems.append(f"dockctl verify --deep exited {r.get('verify_rc')}: "
                        f"{r.get('verify_out')}")
    for key in ("journal", "wipe_intents"):
        if r.get(key):
            problems.append(f"{r[key]} {key} rows left after the agent finished")
    if r.get("partials"):
        problems.append(f"partial files left: {r['partials']}")
    if r.get("write_cache") != "write back":
        problems.append(f"the state disk is not write-back cached ({r.get('write_cache')}): "
                        "the guest would not flush")
    return problems


class Trial:
    """One recorder, a list of cuts, then a final boot that must finish the job."""

    def __init__(self, image_dir: Path, workdir: Path, name: str, cuts: list[Cut], *,
                 log: Any = None) -> None:
        self.image_dir = image_dir
        self.xchg = workdir / name
        self.name = name
        self.cuts = cuts
        self.spec = recorder_spec(SERIAL, SIZES)  # the guest derives the same
        self.disk = StateDisk(self.xchg / "disk")
        self.report = TrialReport(name)
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.image_name = f"{SERIAL}.img"
        self.originals: list[ImageFile] = []

    def _prepare(self) -> None:
        shutil.rmtree(self.xchg, ignore_errors=True)
        self.xchg.mkdir(parents=True)
        storage = RecorderStorage(self.spec, self.xchg / "recorders" / SERIAL)
        storage.materialise()
        build_fat_image(self.xchg / self.image_name, storage.backing, size_mib=64,
                        partitioned=True)
        self.originals = image_files(self.xchg / self.image_name, partitioned=True)
        self.disk.create()

    def _sync_recorder_image(self) -> list[str]:
        """The recorder's LUN shows what its flash holds: drop what the firmware deleted."""
        flash = recorder_flash(self.xchg, SERIAL)
        image = self.xchg / self.image_name
        gone = [f.name for f in image_files(image, partitioned=True) if f.name not in flash]
        delete_files(image, gone, partitioned=True)
        return gone

    def _boot(self, boot: int, cut: Cut | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        for d in ("req", "res"):
            shutil.rmtree(self.xchg / d, ignore_errors=True)
        markers = f"markers-{boot}.log"
        (self.xchg / markers).unlink(missing_ok=True)
        params = {"name": "power", "serial": SERIAL, "sizes": SIZES, "image": self.image_name,
                  "boot": boot, "markers": markers, "hold": cut.hold if cut else None,
                  "timeout": 500}
        (self.xchg / f"params-{boot}.json").write_text(json.dumps(params))
        self.disk.start()
        # DOCK_HIL_SRC: run the guest against another checkout (e.g. a deliberately broken one).
        vm = GuestVM(self.image_dir, self.xchg, systemd=True, extra=self.disk.qemu_args(),
                     console=f"console-{boot}.log",
                     src=Path(os.environ.get("DOCK_HIL_SRC") or ROOT))
        info: dict[str, Any] = {"boot": boot, "planned": cut.describe() if cut else "finish"}
        try:
            vm.start()
            info["boot_s"] = round(vm.boot_s or 0, 1)
            req = vm.submit(["tests/hil/guest/scenario.py", "power",
                             f"/mnt/xchg/params-{boot}.json"], timeout_s=900)
            started: float | None = None
            deadline = time.monotonic() + 960
            while True:
                done = vm.result_of(req)
                seen = self._markers(markers)
                if done is not None:
                    info["markers"] = seen
                    if done.rc != 0 or "error" in done.result:
                        raise GuestError(f"power scenario failed in boot {boot}: "
                                         f"{done.result.get('error')}\n{done.log[-4000:]}")
                    if cut is not None:
                        info["hit"] = None  # the agent finished before reaching the moment
                        self._log(f"{self.name}: boot {boot}: {cut.describe()} not reached")
                    vm.stop()
                    self.disk.stop()
                    return done.result, info
                if vm.proc is None or vm.proc.poll() is not None:
                    raise GuestError(f"guest died in boot {boot}:\n{vm.console_tail()}")
                if time.monotonic() > deadline:
                    raise GuestError(f"boot {boot}: no result and no cut in time")
                if cut is not None:
                    if started is None and any(m.startswith("offload_started") for m in seen):
                        started = time.monotonic()
                    fire = (cut.hold is not None and any(m.startswith("HOLD ") for m in seen)) \
                        or (cut.delay_s is not None and started is not None
                            and time.monotonic() - started >= cut.delay_s)
                    if fire:
                        self.disk.cut()  # power off: the disk's volatile cache first ...
                        vm.kill()  # ... then the machine (guest page cache, recorder, agent)
                        info["markers"] = seen
                        info["hit"] = seen[-1] if seen else "(before any crash point)"
                        self._log(f"{self.name}: boot {boot}: power cut at "
                                  f"{cut.describe()}; last step {info['hit']}")
                        return None, info
                time.sleep(0.05)
        finally:
            vm.kill()
            self.disk.cut()

    def _markers(self, name: str) -> list[str]:
        try:
            return (self.xchg / name).read_text().splitlines()
        except OSError:
            return []

    def run(self) -> TrialReport:
        t0 = time.monotonic()
        self._prepare()
        final: dict[str, Any] | None = None
        for boot, cut in enumerate([*self.cuts, None]):
            result, info = self._boot(boot, cut)
            if cut is not None:
                info["recorder_deleted"] = self._sync_recorder_image()
                self.report.cuts.append(info)
            if result is not None:
                final = result
            if cut is None:
                break
        assert final is not None
        flash = recorder_flash(self.xchg, SERIAL)
        self.report.final = {k: final.get(k) for k in (
            "final_state", "write_cache", "fua", "verify_rc", "journal", "wipe_intents",
            "partials", "offload_result")}
        self.report.final["on_recorder"] = sorted(flash)
        self.report.final["evidence"] = final.get("evidence")
        self.report.problems = check_custody(self.originals, flash, final)
        self.report.elapsed_s = round(time.monotonic() - t0, 1)
        return self.report


# --- the campaign ------------------------------------------------------------------------------
def random_cuts(rng: random.Random) -> list[Cut]:
    """One to three cuts: deliberate steps (early arrivals, which a trial surely reaches)
    or random delays into the offload."""
    cuts: list[Cut] = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.6:
            point = rng.choice(list(MOMENTS))
            # Only file 2 has a mid-file sync; a later boot has fewer files left to reach.
            nth = 1 if point == "copy_synced" or cuts else rng.randint(1, 2)
            cuts.append(Cut(hold=f"{point}:{nth}"))
        else:
            # The whole offload takes 15-20 s in the guest under TCG.
            cuts.append(Cut(delay_s=round(rng.uniform(0.0, 15.0), 1)))
    return cuts


def summarise(reports: list[TrialReport]) -> dict[str, Any]:
    hits: dict[str, int] = {}
    for rep in reports:
        for c in rep.cuts:
            hit = c.get("hit")
            key = "not reached" if hit is None else hit.removeprefix("HOLD ").rsplit(" ", 1)[0]
            hits[key] = hits.get(key, 0) + 1
    return {"trials": len(reports), "failed": [r.name for r in reports if not r.ok],
            "cuts": sum(len(r.cuts) for r in reports), "moments_hit": hits}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/hil/power-cut", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5, help="number of trials (default 5)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[2]
                    / ".cache/hil/power-cut", help="trial directories (kept for reading)")
    ap.add_argument("--cut", action="append", default=[],
                    help="instead of random cuts, these (point:n or a delay in seconds); "
                         "repeat for several cuts per trial")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    image = build_image()
    reports = []
    print(f"power-cut campaign: {args.trials} trials, seed {seed}", file=sys.stderr)
    for i in range(args.trials):
        if args.cut:
            cuts = [Cut(hold=c) if ":" in c else Cut(delay_s=float(c)) for c in args.cut]
        else:
            cuts = random_cuts(rng)
        trial = Trial(image, args.workdir, f"trial-{i:03d}", cuts)
        try:
            rep = trial.run()
        except GuestError as exc:
            rep = trial.report
            rep.problems.append(f"harness: {exc}")
        reports.append(rep)
        status = "ok" if rep.ok else "FAILED"
        print(json.dumps({"trial": rep.name, "status": status, "elapsed_s": rep.elapsed_s,
                          "cuts": [{k: c.get(k) for k in ("boot", "planned", "hit")}
                                   for c in rep.cuts], "problems": rep.problems}),
              flush=True)
    summary = summarise(reports)
    summary["seed"] = seed
    print(json.dumps(summary), flush=True)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
