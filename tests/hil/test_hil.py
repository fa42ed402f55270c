"""Hardware in the loop: the agent on a real Linux USB stack (qemu guest, dummy_hcd gadgets).

Every test runs one scenario in the guest (tests/hil/guest/scenario.py) and asserts on what
it saw: real udev events, a real CDC-ACM tty, a real FAT filesystem over USB mass storage,
real surprise removal. Expected footage hashes come from the FAT image itself, read back on
the host with mtools.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .hil_session import Guest, RecorderImage

pytestmark = pytest.mark.timeout(1500)
MIB = 1 << 20


def _assert_offloaded(r: dict[str, Any], rec: RecorderImage, *, replugged: bool = False) -> None:
    assert r["final_state"] == "released", (r["final_state"], r["faults"], r["offload_result"])
    want = {f.name: (f.size, f.blake3) for f in rec.files}
    got = {e["source_name"]: (e["size"], e["blake3"]) for e in r["evidence"]}
    # Every file of the medium is in the evidence store once, with the medium's BLAKE3 ...
    assert got == want
    # ... and the stored copies on the evidence disk hash to the same values.
    assert r["stored_hashes"] == {name: h for name, (_, h) in want.items()}
    assert all(j["complete"] for j in r["journal"])  # nothing left half-copied
    # Custody: docked, identified, clock set, every file offloaded and verified.
    ledger = r["ledger"]
    for kind in ("docked", "identified", "clock_set"):
        assert kind in ledger, (kind, ledger)
    assert ledger.count("offloaded") == len(rec.files)
    assert ledger.count("verified") == len(rec.files)
    # The recorder's clock was 42.5 s off; the agent set it (at the first docking: after a
    # replug the recorder's clock is still right and only checked).
    clock = r["clock"]
    if replugged:
        assert clock["action"] in ("ok", "set"), clock
    else:
        assert clock["action"] == "set" and clock["set_ok"], clock
        assert abs(clock["drift_before_ms"] + 42500) < 2000, clock
    assert r["recorder_clock_sets"] == 1
    assert abs(r["recorder_clock_error_ms"]) < 2000
    # Storage was mounted read-only, on a block device switched read-only, and only vfat.
    assert r["mounts"], "the agent never mounted the recorder"
    for m in r["mounts"]:
        assert m["fstype"] == "vfat", m
        assert "ro" in m["options"].split(","), m
        assert {"nosuid", "nodev", "noexec"} <= set(m["options"].split(",")), m
        assert m["device_ro"] == "1", m
    assert r["mass_storage_after"] is False  # locked again when released
    assert r["verify_rc"] == 0, r["verify_out"]
    assert r["image_unchanged"]  # nothing wrote to the medium
    assert "undocked" in r["ledger_after_unplug"]
    assert r["mounts_left"] == []
    assert r["agent_rc"] == 0


def test_gadget_usb_stack(guest: Guest) -> None:
    """The bare stack: udev sees the ACM tty at plug, the vfat partition only after unlock
    over that tty, both under the same USB device; unplug removes both."""
    rec = guest.recorder_image("BWC00009", [1 * MIB, 2 * MIB], partitioned=True)
    r = guest.scenario("gadget_smoke", {"serial": rec.serial, "sizes": rec.sizes,
                                        "image": rec.image}).result
    assert len(r["udcs"]) == 2
    assert r["acm"]["devnode"].startswith("/dev/ttyACM")
    assert "BWC00009" in r["identity"]
    assert r["recordings"] == 2
    assert r["disk_before_unlock"] is None  # locked: no filesystem visible
    assert r["fs"]["ID_FS_TYPE"] == "vfat"
    assert r["fs"]["DEVTYPE"] == "partition"
    assert r["fs"]["parent"] == r["acm"]["parent"] != ""  # one USB device, two functions
    assert r["mass_storage_state"] is True
    # Firmware update through the real USB stack: the gadget re-enumerates on reboot and
    # runs the new image from slot B.
    fw = r["firmware"]
    assert fw["identity_after"] == "1.1.0", fw
    assert fw["after"] == {"running": "1.1.0", "active": "B", "last_result": 1}, fw
    assert r["remaining_sd"] == []
    assert r["gadget_removed"]
    # The stand-alone recorder (python -m hw_sim.gadget) plugs, and unplugs on SIGTERM.
    assert r["cli"]["acm"]["devnode"].startswith("/dev/ttyACM"), r["cli"]
    assert r["cli"]["rc"] == 0, r["cli"]["output"]
    assert not r["cli"]["gadget_left"]
    print(json.dumps({k: r[k] for k in ("tty_after_s", "fs_after_unlock_s",
                                        "removed_after_s")}
                     | {"firmware_256k_transfer_s": fw["transfer_s"]}))


def test_offload_partitioned_recorder(guest: Guest) -> None:
    rec = guest.recorder_image("BWC00001", [3 * MIB, 5 * MIB, 1 * MIB + 12345],
                               partitioned=True)
    r = guest.scenario("offload", {"name": "partitioned", "serial": rec.serial,
                                   "sizes": rec.sizes, "image": rec.image}).result
    _assert_offloaded(r, rec)
    assert r["plugs"] == 1


def test_whole_disk_recorder(guest: Guest) -> None:
    """A recorder whose FAT filesystem covers the whole disk (no partition table)."""
    rec = guest.recorder_image("BWC00002", [2 * MIB, 3 * MIB], partitioned=False)
    r = guest.scenario("offload", {"name": "wholedisk", "serial": rec.serial,
                                   "sizes": rec.sizes, "image": rec.image}).result
    _assert_offloaded(r, rec)
    assert all(m["source"] == f"/dev/{m['disk']}" for m in r["mounts"])  # the whole disk


def test_unplug_mid_file_then_replug_resumes(guest: Guest) -> None:
    rec = guest.recorder_image("BWC00003", [1 * MIB, 16 * MIB, 2 * MIB], partitioned=True)
    r = guest.scenario("offload", {"name": "resume", "serial": rec.serial, "sizes": rec.sizes,
                                   "image": rec.image, "unplug_during": 1}).result
    hit = r["interrupted"]
    assert hit is not None and hit["file"].endswith(rec.files[1].name.rsplit("/", 1)[-1])
    # Pulled mid-file: the big file was not in the store, nothing stayed mounted, and the
    # session ended.
    assert r["evidence_after_unplug"] < len(rec.files)
    assert r["mounts_after_unplug"] == []
    assert r["after_unplug_bay"] is None
    assert r["plugs"] == 2
    _assert_offloaded(r, rec, replugged=True)
    # Resumed, not restarted: the durable prefix of the interrupted file was not re-copied.
    assert 0 < hit["durable_len"] < rec.files[1].size
    rest = rec.files[1].size - hit["durable_len"] + rec.files[2].size
    assert r["offload_result"]["bytes_copied"] <= rest, (r["offload_result"], hit)


def test_usb_stick_is_rejected_and_never_mounted(guest: Guest) -> None:
    rec = guest.recorder_image("STICK001", [1 * MIB], partitioned=True)
    r = guest.scenario("usb_stick", {"name": "stick", "serial": "4C530001",
                                     "image": rec.image}).result
    assert r["fs"]["ID_FS_TYPE"] == "vfat"  # udev did see a mountable filesystem
    assert r["fs_props"].get("DOCK_AGENT_RECORDER") != "1"  # our rule did not tag it
    assert r["mounts"] == []  # never mounted
    assert "device_rejected" in r["ledger"] or any(
        "reject" in json.dumps(f).lower() for f in r["faults"]), (r["ledger"], r["faults"])
    assert r["status"]["bays"] == []
    assert r["agent_rc"] == 0
    assert r["cleared_mounts"] == []


def test_firmware_update_through_the_usb_stack(guest: Guest) -> None:
    """A recorder below the dock's target firmware is updated once, over the real CDC-ACM
    tty: after its footage is offloaded, a staged signed package is sent, committed, the
    gadget reboots (leaves the bus, re-attaches) and the dock records the new version."""
    rec = guest.recorder_image("BWC00011", [1 * MIB], partitioned=True)
    r = guest.scenario("firmware_update", {"name": "firmware", "serial": rec.serial,
                                           "sizes": rec.sizes, "image": rec.image,
                                           "image_bytes": 256 * 1024},
                      timeout_s=1300).result
    assert r["add_rc"] == 0, r["add_out"]
    assert r["first_state"] == "released", r
    ledger = r["ledger"]
    assert ledger.index("firmware_started") > ledger.index("verified"), ledger
    assert "firmware_completed" in ledger, (ledger, r["attempts"])
    (done,) = r["completed"]
    assert (done["from_version"], done["running_version"]) == ("1.0.0", "1.1.0"), done
    assert [a["state"] for a in r["attempts"]] == ["completed"], r["attempts"]
    assert r["plugs"] >= 2  # it left the bus for its reboot and came back
    row = next(x for x in r["status"]["recorders"] if x["serial"] == rec.serial)
    assert row["running"] == "1.1.0" and row["state"] == "current", row
    assert r["agent_rc"] == 0
    print(json.dumps({"update_s": r["update_s"]}))
