"""HIL scenarios, run inside the guest by the runner: `scenario.py <name> <params.json>`.

Each scenario drives real gadgets on dummy_hcd, observes real udev and the real agent, and
writes its findings as JSON (hil_guestlib.result); the host-side tests assert on them, so a
scenario only raises for "could not even run". Params (from the host) name the images and
footage sizes in the exchange directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hil_guestlib import (
    Agent,
    MountWatch,
    clear_leftover_mounts,
    log,
    result,
    udev_props,
    uptime,
    usb_parent,
)
from hil_specs import FLEET_SECRET, STICK_VID_PID, recorder_spec

from firmware_bridge import fwpackage
from firmware_bridge.client import RecorderClient
from firmware_bridge.errors import BridgeError
from hw_sim.footage import footage_files
from hw_sim.fwkeys import sim_vendor_key
from hw_sim.gadget import GadgetRecorder, GadgetSpec, UsbGadget, available_udcs

XCHG = Path("/mnt/xchg")
RUNTIME_DIR = Path("/run/dock-agent")
LOGS = XCHG / "guest-logs"


_COPIES: set[Path] = set()  # LUN images copied by this scenario (one process each)


def _local_copy(image: str) -> Path:
    """LUN backing files live on the guest's own disk: 9p is not a block device's backing
    store. Earlier scenarios' copies are removed first, or six 64 MiB images fill the
    guest's root file system."""
    src = XCHG / image
    dst = Path("/tmp") / src.name
    for stale in Path("/tmp").glob("*.img"):
        if stale not in _COPIES and stale != dst:
            stale.unlink(missing_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)
    _COPIES.add(dst)
    return dst


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _wait_for(fn: Any, timeout_s: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


def _usb_disks(serial: str) -> list[str]:
    """Block devices (disk and partitions) whose udev ID_SERIAL_SHORT is `serial`."""
    out = []
    for dev in sorted(glob.glob("/dev/sd*")):
        props = udev_props(dev)
        if props.get("ID_SERIAL_SHORT") == serial:
            out.append(dev)
    return out


def _fs_node(serial: str) -> dict[str, str] | None:
    for dev in _usb_disks(serial):
        props = udev_props(dev)
        if props.get("ID_FS_TYPE"):
            return {"devnode": dev, "ID_FS_TYPE": props["ID_FS_TYPE"],
                    "DEVTYPE": props.get("DEVTYPE", ""), "ID_USB_VENDOR_ID":
                    props.get("ID_VENDOR_ID", ""), "parent": usb_parent(dev) or ""}
    return None


def _acm_of(serial: str) -> dict[str, str] | None:
    for dev in sorted(glob.glob("/dev/ttyACM*")):
        props = udev_props(dev)
        if props.get("ID_SERIAL_SHORT") == serial:
            return {"devnode": dev, "parent": usb_parent(dev) or ""}
    return None


# --- 1. the bare USB stack: gadget, udev, tty link ------------------------------------------
async def gadget_smoke(p: dict[str, Any]) -> dict[str, Any]:
    """Plug a recorder gadget; time tty and filesystem appearance; talk over the tty; unplug."""
    spec = recorder_spec(p["serial"], p["sizes"])
    image = _local_copy(p["image"])
    udc = available_udcs()[0]
    rec = GadgetRecorder(spec, XCHG / "recorders", image, udc=udc, secret=FLEET_SECRET)
    out: dict[str, Any] = {"udcs": available_udcs()}
    t0 = time.monotonic()
    await rec.plug()
    acm = await _wait_for(lambda: _acm_of(spec.serial), 30, "ttyACM")
    out["tty_after_s"] = time.monotonic() - t0
    out["acm"] = acm
    out["disk_before_unlock"] = _fs_node(spec.serial)
    client = await RecorderClient.open(acm["devnode"], timeout=5.0, retries=2)
    try:
        hello = await client.hello()
        await client.authenticate(FLEET_SECRET)
        out["hello"] = str(hello)
        out["identity"] = str(await client.identity())
        out["recordings"] = len(await client.list_recordings())
        t1 = time.monotonic()
        await client.set_mass_storage(True)
        fs = await _wait_for(lambda: _fs_node(spec.serial), 60, "filesystem on the LUN", 0.2)
        out["fs_after_unlock_s"] = time.monotonic() - t1
        out["fs"] = fs
        out["mass_storage_state"] = rec.state.mass_storage
        out["firmware"], acm = await _firmware_update(rec, client)
    finally:
        await client.close()
    t2 = time.monotonic()
    await rec.unplug()
    await _wait_for(lambda: not glob.glob(acm["devnode"]) and not _usb_disks(spec.serial), 30,
                    "removal")
    out["removed_after_s"] = time.monotonic() - t2
    out["remaining_sd"] = glob.glob("/dev/sd*")
    await rec.close()
    out["gadget_removed"] = not rec.gadget.exists
    out["cli"] = await _gadget_cli(image)
    return out


async def _firmware_update(rec: GadgetRecorder, client: RecorderClient
                           ) -> tuple[dict[str, Any], dict[str, str]]:
    """A signed image over the real CDC-ACM link: transfer, commit, reboot (the gadget leaves
    the bus and re-enumerates), then the recorder runs the new version."""
    image = hashlib.sha256(b"hil firmware").digest() * 8192  # 256 KiB
    package = fwpackage.build_package(
        image, vendor="dock-sim", models=[rec.spec.model], version="1.1.0", min_from=None,
        max_from=None, private_key=sim_vendor_key(), created="2026-11-27T00:00:00Z")
    header = fwpackage.read_header(io.BytesIO(package))
    out: dict[str, Any] = {"before": str(await client.firmware_status())}
    t0 = time.monotonic()
    begin = await client.firmware_begin(header.manifest_bytes, header.signature)
    offset = begin.offset
    while offset < len(image):
        data = image[offset:offset + begin.chunk_max]
        await client.firmware_chunk(offset, data)
        offset += len(data)
    out["transfer_s"] = time.monotonic() - t0
    await client.firmware_commit()
    plugs = rec.plugs
    await client.reboot()
    await _wait_for(lambda: rec.plugs > plugs, 60, "the recorder back from its reboot")
    acm, again = await _reconnect(rec.spec.serial, 60)
    try:
        out["identity_after"] = (await again.identity()).firmware
        status = await again.firmware_status()
        out["after"] = {"running": status.running_version, "active": status.active_slot,
                        "last_result": int(status.last_result)}
    finally:
        await again.close()
    return out, acm


async def _reconnect(serial: str, timeout_s: float) -> tuple[dict[str, str], RecorderClient]:
    """The re-enumerated recorder's tty, opened and authenticated (udev may still list the
    old node for a moment: retry until the new one answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        acm = _acm_of(serial)
        if acm is not None:
            with contextlib.suppress(BridgeError):
                return acm, await _open_authenticated(acm["devnode"])
        await asyncio.sleep(0.2)
    raise TimeoutError(f"recorder {serial} did not come back within {timeout_s} s")


async def _open_authenticated(devnode: str) -> RecorderClient:
    client = await RecorderClient.open(devnode, timeout=5.0, retries=2)
    try:
        await client.hello()
        await client.authenticate(FLEET_SECRET)
    except BaseException:
        await client.close()
        raise
    return client


async def _gadget_cli(image: Path) -> dict[str, Any]:
    """The stand-alone entry point (what a Raspberry Pi recorder rig runs): plugs on start,
    unplugs and removes its gadget on SIGTERM."""
    serial = "BWC00010"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.gadget", "--serial", serial, "--image", str(image),
        "--workdir", "/tmp/cli-recorder", "--udc", available_udcs()[-1],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out: dict[str, Any] = {}
    try:
        out["acm"] = await _wait_for(lambda: _acm_of(serial), 60, "the CLI recorder's tty")
    finally:
        proc.terminate()
        output, _ = await proc.communicate()
    out["rc"] = proc.returncode
    out["output"] = output.decode(errors="replace")[-2000:]
    await _wait_for(lambda: _acm_of(serial) is None, 30, "the CLI recorder's removal")
    out["gadget_left"] = Path("/sys/kernel/config/usb_gadget/rec_bwc00010").exists()
    return out


# --- 2. the agent end to end -------------------------------------------------------------------
async def offload(p: dict[str, Any]) -> dict[str, Any]:
    """Dock a recorder with the agent running: detect, pair, authenticate, identify, set the
    clock, mount read-only, offload, verify. With `unplug_during` set, pull it in the middle
    of that footage file, then plug it back and let the offload resume and complete."""
    spec = recorder_spec(p["serial"], p["sizes"])
    image = _local_copy(p["image"])
    image_sha_before = _sha256(image)
    agent = Agent(p["name"], LOGS, debounce_ms=1500)
    out: dict[str, Any] = {"agent_start_s": await agent.start()}
    watch = MountWatch()
    watch.start()
    rec = GadgetRecorder(spec, XCHG / "recorders", image, udc=available_udcs()[0],
                         secret=FLEET_SECRET)
    try:
        t0 = time.monotonic()
        await rec.plug()
        out["interrupted"] = None
        if p.get("unplug_during") is not None:
            out["interrupted"] = await _unplug_mid_file(agent, rec, spec.serial, p, out)
            # A real removal (longer than the debounce): the agent ends the session. Waited
            # for, not slept: on a loaded machine that takes longer than any fixed pause.
            with contextlib.suppress(TimeoutError):
                await agent.wait_gone(spec.serial, 120)
            out["after_unplug_bay"] = await agent.bay(spec.serial)
            out["evidence_after_unplug"] = len(agent.evidence(spec.serial))
            out["mounts_after_unplug"] = _recorder_mounts()
            t0 = time.monotonic()
            await rec.plug()
        done = await agent.wait_state(spec.serial, {"released", "failed"}, p.get("timeout", 400))
        out["offload_s"] = time.monotonic() - t0
        out["final_state"] = done.get("state")
        out["offload_result"] = done.get("offload_result")
        out["faults"] = done.get("faults")
        out["clock"] = done.get("clock")
        out["recorder_clock_error_ms"] = rec.state.clock.now_ms(time.time()) - time.time() * 1000
        out["recorder_clock_sets"] = rec.state.clock_sets
        out["mass_storage_after"] = rec.state.mass_storage
        out["plugs"] = rec.plugs
        out["evidence"] = agent.evidence(spec.serial)
        out["stored_hashes"] = agent.stored_file_hashes(spec.serial)
        out["ledger"] = agent.ledger_kinds(spec.serial)
        out["journal"] = agent.query("SELECT source_name, durable_len, complete "
                                     "FROM offload_journal WHERE recorder_serial = ?",
                                     spec.serial)
        for j in out["journal"]:
            j["source_name"] = bytes(j["source_name"]).decode("utf-8", "replace")
        out["mounts"] = await watch.stop()
        verify = agent.dockctl("verify", "--deep", "--json")
        out["verify_rc"] = verify.returncode
        out["verify_out"] = verify.stdout[-4000:] + verify.stderr[-2000:]
        await rec.unplug()
        await agent.wait_gone(spec.serial, 30)
        out["ledger_after_unplug"] = agent.ledger_kinds(spec.serial)
        out["mounts_left"] = _recorder_mounts()
    finally:
        await watch.stop()
        await rec.close()
        out["agent_rc"] = await agent.stop()
        out["cleared_mounts"] = clear_leftover_mounts()
    out["image_unchanged"] = _sha256(image) == image_sha_before
    return out


async def firmware_update(p: dict[str, Any]) -> dict[str, Any]:
    """Dock a recorder whose firmware is below the dock's target: offload, then a signed
    package staged with `dockctl firmware add` goes over the real CDC-ACM tty, the gadget
    reboots (leaves the bus and re-attaches), and the dock records the new version."""
    from firmware_bridge.fwpackage import build_package, public_key_pem
    from hw_sim.fwkeys import sim_vendor_key

    key = sim_vendor_key()
    etc = Path("/etc/dock-agent")
    etc.mkdir(exist_ok=True)
    key_file = etc / "firmware-vendor.pem"
    key_file.write_bytes(public_key_pem(key.public_key()))
    key_file.chmod(0o644)
    pkg = Path("/srv/hil-firmware.dfw")  # the agent's service has a private /tmp
    pkg.write_bytes(build_package(
        bytes(range(256)) * (p["image_bytes"] // 256), vendor="SimVendor",
        models=["DSJ-SIM1"], version="1.1.0", min_from="1.0.0", max_from=None,
        private_key=key, created="2026-11-01T00:00:00Z"))
    pkg.chmod(0o644)
    spec = recorder_spec(p["serial"], p["sizes"])
    image = _local_copy(p["image"])
    agent = Agent(p["name"], LOGS, debounce_ms=1500, extra_config=f"""
[firmware]
trusted_keys = ["{key_file}"]
targets = {{ "DSJ-SIM1" = "1.1.0" }}
min_battery_percent = 20
chunk_timeout_s = 30.0
""")
    out: dict[str, Any] = {"agent_start_s": await agent.start()}
    log(f"agent up after {out['agent_start_s']:.1f} s")
    added = agent.dockctl("firmware", "add", str(pkg), "--json")
    log(f"firmware add: rc {added.returncode}")
    out["add_rc"], out["add_out"] = added.returncode, added.stdout[-2000:] + added.stderr[-2000:]
    rec = GadgetRecorder(spec, XCHG / "recorders", image, udc=available_udcs()[0],
                         secret=FLEET_SECRET)
    try:
        t0 = time.monotonic()
        await rec.plug()
        log("plugged")
        first = await agent.wait_state(spec.serial, {"released", "failed"}, 400)
        log(f"first docking: {first.get('state')}")
        out["first_state"] = first.get("state")
        out["first_offload"] = first.get("offload_result")

        def completed() -> bool:
            settled = {"firmware_completed", "firmware_failed", "firmware_rolled_back"}
            return bool(settled & set(agent.ledger_kinds(spec.serial)))

        with contextlib.suppress(TimeoutError):
            await _wait_for(completed, p.get("timeout", 900), "firmware update settled", 1.0)
        out["update_s"] = time.monotonic() - t0
        out["ledger"] = agent.ledger_kinds(spec.serial)
        log(f"update settled after {out['update_s']:.1f} s: {out['ledger'][-4:]}")
        out["attempts"] = agent.query("SELECT state, bytes_done, size, resumes, from_version,"
                                      " to_version, reason FROM firmware_attempts")
        out["plugs"] = rec.plugs
        out["completed"] = [json.loads(r["data"]) for r in agent.query(
            "SELECT data FROM ledger WHERE kind = 'firmware_completed'")]
        with contextlib.suppress(TimeoutError):  # docked again after its reboot
            await agent.wait_state(spec.serial, {"released", "failed"}, 300)
        status = agent.dockctl("firmware", "status", "--json")
        out["status"] = json.loads(status.stdout) if status.returncode in (0, 1) else None
        await rec.unplug()
        await agent.wait_gone(spec.serial, 60)
    finally:
        await rec.close()
        out["agent_rc"] = await agent.stop()
        out["cleared_mounts"] = clear_leftover_mounts()
    return out


def _recorder_mounts() -> list[str]:
    return [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.startswith("/dev/sd")]


async def _unplug_mid_file(agent: Agent, rec: GadgetRecorder, serial: str,
                           p: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    """Wait until the agent is part-way through footage file `unplug_during` (its journal
    row shows a durable prefix, not the whole file) and pull the recorder off the bus."""
    index = int(p["unplug_during"])
    name = footage_files(rec.spec)[index].name.decode()

    def copying() -> dict[str, Any] | None:
        try:
            rows = agent.query("SELECT source_name, durable_len, complete, source_size "
                               "FROM offload_journal WHERE recorder_serial = ?", serial)
        except sqlite3.Error:  # the database may not exist yet
            return None
        for r in rows:
            mine = bytes(r["source_name"]).decode().endswith(name.rsplit("/", 1)[-1])
            if mine and not r["complete"] and 0 < r["durable_len"] < r["source_size"]:
                return {"file": name, "durable_len": r["durable_len"], "size": r["source_size"]}
        return None

    hit = await _wait_for(copying, p.get("timeout", 400), f"offload of {name}", 0.05)
    status = await agent.bay(serial)
    hit["progress"] = (status or {}).get("offload")
    await rec.unplug()
    log(f"unplugged during {hit}")
    return hit


# --- 3. a USB stick is not a recorder -------------------------------------------------------------
async def usb_stick(p: dict[str, Any]) -> dict[str, Any]:
    """A mass-storage-only gadget with an unknown VID:PID, medium present from plugging."""
    image = _local_copy(p["image"])
    agent = Agent(p["name"], LOGS)
    out: dict[str, Any] = {"agent_start_s": await agent.start()}
    watch = MountWatch()
    watch.start()
    vid, pid = (int(x, 16) for x in STICK_VID_PID)
    stick = UsbGadget(GadgetSpec("stick", vid=vid, pid=pid, serial=p["serial"], acm=False,
                                 manufacturer="SanDisk", product="Cruzer Blade"))
    try:
        await asyncio.to_thread(stick.create)
        await asyncio.to_thread(stick.insert_medium, image)
        await asyncio.to_thread(stick.plug, available_udcs()[-1])
        fs = await _wait_for(lambda: _fs_node(p["serial"]), 60, "the stick's filesystem", 0.2)
        out["fs"] = fs
        out["fs_props"] = udev_props(fs["devnode"])
        await asyncio.sleep(p.get("observe_s", 8.0))  # give a wrong agent time to mount it
        out["status"] = await agent.status()
        out["ledger"] = agent.ledger_kinds()
        out["faults"] = agent.query("SELECT * FROM faults")
        out["mounts"] = await watch.stop()
        await asyncio.to_thread(stick.unplug)
    finally:
        await watch.stop()
        await asyncio.to_thread(stick.destroy)
        out["agent_rc"] = await agent.stop()
        out["cleared_mounts"] = clear_leftover_mounts()
    out["image_sha256"] = _sha256(image)
    return out


# --- 4. power cuts (tests/hil/hil_power.py cuts the power; this is one boot's share) ------
STATE_DISK = Path("/dev/disk/by-id/virtio-dockstate")


def _mirror_markers(src: Path, dst: Path, held: asyncio.Event) -> asyncio.Task[None]:
    """Copy the agent's crash-point markers to the host as they come (it cuts the power
    when it sees the step it asked for)."""

    async def run() -> None:
        seen = b""
        while True:
            try:
                now = src.read_bytes()
            except OSError:
                now = b""
            if now != seen:
                seen = now
                tmp = dst.with_suffix(".tmp")
                tmp.write_bytes(now)
                tmp.replace(dst)
                if b"HOLD " in now:
                    held.set()
            await asyncio.sleep(0.05)

    return asyncio.create_task(run())


def _partials(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob(".partial-*")) if (
        store.is_dir()) else []


async def power(p: dict[str, Any]) -> dict[str, Any]:
    """One boot of a power-cut trial: mount the dock's state disk (the qemu disk whose
    unflushed writes a power cut loses), start the agent with its crash-point hooks armed,
    dock the recorder (its flash: the firmware's directory on the host side), and either
    stop at the armed step (the host then cuts the power) or let the offload finish and
    report what the dock holds."""
    spec = recorder_spec(p["serial"], p["sizes"])
    image = _local_copy(p["image"])
    state = Path("/var/lib/dock-agent") / p["name"]
    state.mkdir(parents=True, exist_ok=True)
    await _wait_for(STATE_DISK.exists, 60, "the state disk")
    subprocess.run(["mount", "-t", "ext4", "-o", "rw", str(STATE_DISK), str(state)],
                   check=True)
    disk = STATE_DISK.resolve().name
    out: dict[str, Any] = {
        "write_cache": Path(f"/sys/block/{disk}/queue/write_cache").read_text().strip(),
        "fua": Path(f"/sys/block/{disk}/queue/fua").read_text().strip(),
    }
    markers = RUNTIME_DIR / "crashpoints.log"
    RUNTIME_DIR.mkdir(parents=True, exist_ok=True)
    markers.unlink(missing_ok=True)
    env = {"DOCK_AGENT_CRASHPOINT_LOG": str(markers)}
    if p.get("hold"):
        env["DOCK_AGENT_CRASHPOINT_HOLD"] = p["hold"]
    agent = Agent(p["name"], LOGS, wipe=True, env=env)
    out["agent_start_s"] = await agent.start()
    held = asyncio.Event()
    mirror = _mirror_markers(markers, XCHG / p["markers"], held)
    rec = GadgetRecorder(spec, XCHG / "recorders", image, udc=available_udcs()[0],
                         secret=FLEET_SECRET)
    await rec.plug()
    log(f"power: boot {p['boot']} docked {spec.serial}, armed at {p.get('hold')}")
    finished = asyncio.create_task(
        agent.wait_state(spec.serial, {"released", "failed"}, p.get("timeout", 500)))
    holding = asyncio.create_task(held.wait())
    await asyncio.wait({finished, holding}, return_when=asyncio.FIRST_COMPLETED)
    if held.is_set():
        log("power: the agent holds at the armed step; waiting for the power cut")
        await asyncio.Event().wait()  # the host kills the machine
    holding.cancel()
    done = finished.result()
    out["final_state"] = done.get("state")
    out["offload_result"] = done.get("offload_result")
    out["faults"] = done.get("faults")
    out["evidence"] = agent.query(
        "SELECT id, source_name, size, blake3, stored_relpath, verify_state, wiped"
        " FROM evidence_files WHERE recorder_serial = ? ORDER BY id", spec.serial)
    for r in out["evidence"]:
        r["source_name"] = bytes(r["source_name"]).decode("utf-8", "replace")
    out["stored_hashes"] = _stored_hashes(state / "evidence", out["evidence"])
    out["ledger"] = [{"seq": r["seq"], "kind": r["kind"], "data": json.loads(r["data"])}
                     for r in agent.query("SELECT seq, kind, data FROM ledger ORDER BY seq")]
    out["journal"] = len(agent.query("SELECT 1 FROM offload_journal"))
    out["wipe_intents"] = len(agent.query("SELECT 1 FROM wipe_intents"))
    out["partials"] = _partials(state / "evidence")
    verify = agent.dockctl("verify", "--deep", "--json")
    out["verify_rc"] = verify.returncode
    out["verify_out"] = verify.stdout[-4000:] + verify.stderr[-2000:]
    mirror.cancel()
    await rec.unplug()
    await agent.wait_gone(spec.serial, 60)
    await rec.close()
    out["agent_rc"] = await agent.stop()
    subprocess.run(["umount", str(state)], check=False)
    return out


def _stored_hashes(store: Path, rows: list[dict[str, Any]]) -> dict[str, str | None]:
    """BLAKE3 of each stored copy as the disk holds it now, by evidence id."""
    from blake3 import blake3

    out: dict[str, str | None] = {}
    for r in rows:
        h = blake3()
        try:
            with (store / r["stored_relpath"]).open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError:
            out[str(r["id"])] = None
            continue
        out[str(r["id"])] = h.hexdigest()
    return out


SCENARIOS = {"gadget_smoke": gadget_smoke, "offload": offload, "usb_stick": usb_stick,
             "firmware_update": firmware_update,
             "power": power}


def main() -> int:
    name, params = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    LOGS.mkdir(exist_ok=True)
    log(f"scenario {name} {params} (guest up {uptime():.1f} s)")
    started = time.monotonic()
    try:
        out = asyncio.run(SCENARIOS[name](params))
    except Exception as exc:
        import traceback

        traceback.print_exc()
        result({"error": f"{type(exc).__name__}: {exc}", "elapsed_s": time.monotonic() - started})
        return 1
    out["elapsed_s"] = time.monotonic() - started
    result(out)
    subprocess.run(["sync"], check=False)
    log(f"scenario {name} done in {out['elapsed_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
