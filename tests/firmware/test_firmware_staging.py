"""`dockctl firmware add`: a package is verified on entry against the dock's configured keys
(a bad signature, an unknown key, a damaged image, a wrong model, a version below its own
minimum are refused with a clear error and change nothing), stored read-only, indexed and
ledgered once."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge.fwpackage import read_header

from .conftest import FirmwareRigFactory
from .fwrig import entries, package


async def test_add_verifies_stages_read_only_and_ledgers_once(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = make_fw_rig()
    rig.start_agent()
    await rig.wait_agent_up()
    good = package(tmp_path, 300_000)
    code, out, err = await rig.dockctl("firmware", "add", str(good))
    assert code == 0, err
    assert "staged: firmware 1.1.0 for DSJ-SIM1" in out
    with good.open("rb") as f:
        blake3 = read_header(f).manifest.blake3
    staged = rig.state_dir / "firmware" / f"{blake3}.dfw"
    assert staged.read_bytes() == good.read_bytes()
    assert staged.stat().st_mode & 0o777 == 0o444
    (entry,) = entries(rig, "firmware_staged")
    assert entry["blake3"] == blake3 and entry["version"] == "1.1.0" and entry["size"] == 300_000
    code, out, _ = await rig.dockctl("firmware", "add", str(good))
    assert code == 0 and "already staged" in out
    assert len(entries(rig, "firmware_staged")) == 1, "staged twice"
    status = await rig.dockctl_json("firmware", "status")
    assert [p["blake3"] for p in status["packages"]] == [blake3]
    assert status["policies"]["DSJ-SIM1"]["target"] == "1.1.0"


async def test_add_refuses_bad_packages_with_a_clear_error(
        make_fw_rig: FirmwareRigFactory, tmp_path: Path) -> None:
    rig = make_fw_rig()
    rig.start_agent()
    await rig.wait_agent_up()
    other_key = Ed25519PrivateKey.generate()
    good = package(tmp_path, 100_000, name="good.dfw")
    forged = bytearray(good.read_bytes())
    sig_at = 12 + int.from_bytes(forged[8:12], "big")
    forged[sig_at] ^= 0x01  # one bit of the signature
    (tmp_path / "forged.dfw").write_bytes(bytes(forged))
    damaged = bytearray(good.read_bytes())
    damaged[-1] ^= 0xFF  # one byte of the image
    (tmp_path / "damaged.dfw").write_bytes(bytes(damaged))
    cases = {
        "forged.dfw": "signature",
        "damaged.dfw": "",  # the image's hash (the codec's wording)
        package(tmp_path, 1000, key=other_key, name="unknown-key.dfw").name: "key",
        package(tmp_path, 1000, models=("OTHER-9",), name="wrong-model.dfw").name:
            "none of this fleet's",
        package(tmp_path, 1000, version="1.0.5", min_from="1.1.0", name="down.dfw").name:
            "downgrade below min_from",
    }
    (tmp_path / "garbage.dfw").write_bytes(b"not a package at all")
    cases["garbage.dfw"] = ""
    cases["missing.dfw"] = "cannot read"
    for name, words in cases.items():
        code, out, err = await rig.dockctl("firmware", "add", str(tmp_path / name))
        assert code == 1, (name, code, out, err)
        assert "firmware package refused" in err, (name, err)
        assert words.lower() in err.lower(), (name, err)
    assert entries(rig, "firmware_staged") == []
    assert [p.name for p in (rig.state_dir / "firmware").iterdir()] == [] \
        if (rig.state_dir / "firmware").exists() else True
    code, out, err = await rig.dockctl("firmware", "status", "--json")
    assert code == 0 and json.loads(out)["packages"] == []
