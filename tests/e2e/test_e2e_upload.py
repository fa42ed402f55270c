"""Footage docked at a running agent appears in a real Ceph RGW bucket with its custody
metadata; the ledger shows `uploaded`, dockctl shows the queue, and with a purge policy of
zero days the dock copy is purged only after the store acknowledges it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.upload.objects import decode_meta
from agent.upload.s3client import S3Client, S3Config
from firmware_bridge.messages import OfficerRecord
from hw_sim import rgw as rgw_mod
from hw_sim.spec import MIB, FootageSpec, RecorderSpec

from .conftest import RigFactory
from .harness import expected, until


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rgw_mod.Rgw]:
    if not rgw_mod.available():
        pytest.fail("Ceph RGW is not installed; ./scripts/test installs it")
    yield rgw_mod.shared(tmp_path_factory.getbasetemp())
    rgw_mod.release()


async def test_docked_footage_is_uploaded_verified_and_then_purged(
        make_rig: RigFactory, rgw: rgw_mod.Rgw, tmp_path: Path) -> None:
    conf = S3Config(rgw.endpoint, "e2e-evidence", rgw.access_key, rgw.secret_key, rgw.region)
    s3 = S3Client(conf)
    s3.create_bucket(object_lock=True)
    creds = tmp_path / "s3.credentials"
    creds.write_text(f"access_key = {rgw.access_key}\nsecret_key = {rgw.secret_key}\n")
    creds.chmod(0o600)
    rig = make_rig(extra={
        "upload": {"enabled": True, "endpoint": rgw.endpoint, "bucket": "e2e-evidence",
                   "region": rgw.region, "prefix": "unit-1", "credentials_file": creds,
                   "part_mib": 5, "poll_s": 0.5, "backoff_min_s": 0.2, "backoff_max_s": 2.0,
                   "object_lock_mode": "GOVERNANCE"},
        "retention": {"purge": True, "min_days_on_dock": 0, "purge_after_days": 0,
                      "check_interval_s": 0.5},
    })
    spec = RecorderSpec("BWC50001", officer=OfficerRecord(
        officer_no="5001001", officer_name="Wang Fang", unit_no="U05", unit_name="Unit 5"),
        footage=FootageSpec(count=2, size_bytes=6 * MIB, seed=51))
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", spec)
    await rig.wait_released(spec.serial)
    want = {e.blake3.hex() for e in await expected(spec)}
    await rig.wait_ledger(lambda rows: sum(r["kind"] == "purged" for r in rows) == 2,
                          "uploaded and purged", timeout=240)
    rows = rig.ledger(spec.serial)
    kinds = [r["kind"] for r in rows]
    # per file: offloaded before uploaded before purged
    for fid in {r["id"] for r in rig.query("SELECT id FROM evidence_files")}:
        seqs = {r["kind"]: r["seq"] for r in rig.query(
            "SELECT kind, seq FROM ledger WHERE json_extract(data, '$.file_id') = ?", (fid,))}
        assert seqs["offloaded"] < seqs["uploaded"] < seqs["purged"], seqs
    assert kinds.count("uploaded") == 2
    for r in rig.query("SELECT object_key FROM upload_queue"):
        info = s3.head(r["object_key"])
        assert info is not None and r["object_key"].startswith("unit-1/U05/BWC50001/5001001/")
        assert decode_meta(info.metadata["blake3"]) in want
        assert decode_meta(info.metadata["recorder"]) == "BWC50001"
        assert info.lock_mode == "GOVERNANCE" and info.lock_until
        got = hashlib.sha256()
        s3.stream(r["object_key"], got.update)
    assert not rig.store_files()  # both dock copies are gone
    code, out, _ = await rig.dockctl("uploads", "--all")
    assert code == 0 and "uploaded: 2" in out
    await until(lambda: rig.agent.running(), "agent still running")
    assert rig.agent.terminate() == 0
