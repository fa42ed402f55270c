"""The firmware service's command checks on a real SQLite database: hostile file names
for stage-firmware, malformed versions and mismatched packages for set-firmware-policy are
refused with a reason and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.firmware import store
from agent.firmware.commands import run_command
from agent.firmware.errors import PolicyError, StagingError
from agent.firmware.keys import load_trusted_keys
from agent.firmware.service import FirmwareConfig, FirmwareService
from agent.schemas import ALL_SCHEMAS
from agent.settings import FirmwareSettings, ReadinessSettings
from agent.store.db import Database
from agent.store.ledger import Ledger

from .fwrig import MODEL, firmware_section, package


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FirmwareService]:
    share = tmp_path / "share"
    share.mkdir()
    section = firmware_section(tmp_path)
    settings = FirmwareSettings(trusted_keys=section["trusted_keys"], targets={MODEL: "1.1.0"},
                                import_dirs=[share])
    db = Database(tmp_path / "dock.sqlite3", ALL_SCHEMAS)
    config = FirmwareConfig(settings, ReadinessSettings(), tmp_path / "firmware", ZoneInfo("UTC"),
                            load_trusted_keys(settings.trusted_keys))
    yield FirmwareService(config, db, Ledger("dock-test"))
    db.close()


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../../etc/passwd", "x\x00y",
                                  "absent.dfw"])
async def test_stage_from_share_refuses_what_is_not_a_package_there(
        service: FirmwareService, name: str) -> None:
    with pytest.raises(StagingError):
        await service.stage_from_share(name)
    assert await service.db.read(store.packages) == []


async def test_stage_from_share_and_name_it_as_target(service: FirmwareService,
                                                      tmp_path: Path) -> None:
    package(tmp_path / "share", 4096, version="1.2.0", name="p.dfw")
    staged = await run_command(service, "stage-firmware", {"file": "p.dfw"})
    assert staged["newly_staged"] is True
    with pytest.raises(PolicyError, match="not for model"):
        await run_command(service, "set-firmware-policy",
                          {"model": "OTHER-1", "package": staged["blake3"]})
    with pytest.raises(PolicyError, match="disagrees"):
        await run_command(service, "set-firmware-policy",
                          {"model": MODEL, "package": staged["blake3"], "target": "1.3.0"})
    with pytest.raises(PolicyError, match="no staged package"):
        await run_command(service, "set-firmware-policy", {"model": MODEL, "package": "0" * 64})
    done = await run_command(service, "set-firmware-policy",
                             {"model": MODEL, "package": staged["blake3"]})
    assert done["target"] == "1.2.0"
    assert service.policies()[MODEL].target == "1.2.0"
    assert service.policies()[MODEL].source == "central"
    cleared = await run_command(service, "set-firmware-policy", {"model": MODEL})
    assert cleared["cleared"] is True and service.policies()[MODEL].target == "1.1.0"


@pytest.mark.parametrize("args", [{"model": MODEL, "target": "1.x"},
                                  {"model": MODEL, "allowlist": ["1.0", "bad"]},
                                  {"model": "", "target": "1.0"}])
async def test_set_policy_refuses_malformed_versions(service: FirmwareService,
                                                     args: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        await run_command(service, "set-firmware-policy", args)
    assert await service.db.read(store.central_policies) == {}


async def test_a_central_target_the_dock_config_refuses_is_refused_and_the_old_kept(
        tmp_path: Path) -> None:
    """A central target without its own allowlist is judged by the dock's flat
    `allowed_firmware`: one that list forbids would never be installed, so the policy
    contradicts the dock's configuration and is refused, naming why; what was in force
    stays, and nothing is ledgered as set. With an allowlist of its own it is accepted."""
    settings = FirmwareSettings(targets={MODEL: "1.1.0"})
    db = Database(tmp_path / "dock.sqlite3", ALL_SCHEMAS)
    try:
        config = FirmwareConfig(settings, ReadinessSettings(allowed_firmware=["1.0", "1.1"]),
                                tmp_path / "firmware", ZoneInfo("UTC"), {})
        service = FirmwareService(config, db, Ledger("dock-test"))
        await run_command(service, "set-firmware-policy", {"model": MODEL, "target": "1.1"})
        before = await db.read(store.central_policies)
        with pytest.raises(PolicyError, match=r"allowed_firmware.*never be updated"):
            await run_command(service, "set-firmware-policy", {"model": MODEL, "target": "1.2.0"})
        assert await db.read(store.central_policies) == before
        assert service.policies()[MODEL].target == "1.1"
        kinds = await db.read(lambda c: [r[0] for r in c.execute(
            "SELECT kind FROM ledger WHERE kind = 'firmware_policy_set'")])
        assert kinds == ["firmware_policy_set"]
        done = await run_command(service, "set-firmware-policy",
                                 {"model": MODEL, "target": "1.2.0", "allowlist": ["1.2.0"]})
        assert done["target"] == "1.2.0"
    finally:
        db.close()
