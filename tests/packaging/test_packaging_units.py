"""systemd unit and udev rules: verified by systemd's own tools where available."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "dock-agent.service"


def tool(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here."""
    exe = Path(sys.executable).with_name("dock-agent")
    if not exe.exists():
        pytest.skip("dock-agent entry point not installed")
    text = UNIT.read_text().replace("/opt/dock-agent/venv/bin/dock-agent", str(exe))
    unit = tmp_path / "dock-agent.service"
    unit.write_text(text)
    return unit


def test_unit_verifies_clean(runnable_unit: Path) -> None:
    run = subprocess.run([tool("systemd-analyze"), "verify", runnable_unit],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "dock-agent.service" not in run.stderr, run.stderr


def test_security_exposure_matches_readme(runnable_unit: Path) -> None:
    run = subprocess.run([tool("systemd-analyze"), "security", "--offline=true", runnable_unit],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for dock-agent\.service: (\d+\.\d+) (\w+)", run.stdout)
    assert m, run.stdout + run.stderr
    score = float(m.group(1))
    assert score <= 2.0
    readme = (REPO / "README.md").read_text()
    assert f"**{m.group(1)} {m.group(2)}**" in readme


def test_unit_essentials() -> None:
    d = directives(UNIT.read_text())
    expect = {
        "Type": "notify", "WatchdogSec": "30", "Restart": "on-failure", "User": "dock-agent",
        "SupplementaryGroups": "dialout", "StateDirectory": "dock-agent",
        "StateDirectoryMode": "0700", "RuntimeDirectory": "dock-agent", "UMask": "0077",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "DevicePolicy": "closed", "CapabilityBoundingSet": "",
        "RestartPreventExitStatus": "2", "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_NETLINK AF_INET AF_INET6",
    }
    for key, value in expect.items():
        assert d.get(key) == [value], key
    assert d["DeviceAllow"] == ["char-ttyACM rw", "char-ttyUSB rw"]
    assert "PrivateNetwork" not in d  # it would hide udev's netlink events
    assert "disk" not in d["SupplementaryGroups"][0]
    assert d["ExecStart"] == [
        "/opt/dock-agent/venv/bin/dock-agent --config /etc/dock-agent/dock-agent.toml"]


def test_committed_rules_allow_the_example_recorders_only() -> None:
    rules = (REPO / "systemd" / "90-dock-agent.rules").read_text().splitlines()
    active = [line for line in rules if line and not line.startswith("#")]
    assert active[0] == 'ACTION=="remove", GOTO="dock_agent_end"'
    matchers = [line for line in active if "idVendor" in line]
    assert matchers == ['ATTRS{idVendor}=="1d6b", ATTRS{idProduct}=="0104", '
                        'GOTO="dock_agent_recorder"']
    # unknown devices jump to the end before any assignment
    first_assign = min(i for i, line in enumerate(active) if re.search(r"[^=!]=\"", line)
                       and "GOTO" not in line and "LABEL" not in line)
    label = active.index('LABEL="dock_agent_recorder"')
    assert active[label - 1] == 'GOTO="dock_agent_end"' and first_assign > label
    assert 'SUBSYSTEM=="block", ENV{UDISKS_IGNORE}="1", ENV{UDISKS_AUTO}="0"' in active
    assert 'SUBSYSTEM=="tty", GROUP="dialout", MODE="0660"' in active


def test_screen_unit_verifies_and_sees_only_what_it_reads(tmp_path: Path) -> None:
    """dock-screen: its own unprivileged user in the agent's group (the control socket),
    the config file but no secret, no state directory, no recorder mounts."""
    source = REPO / "systemd" / "dock-screen.service"
    d = directives(source.read_text())
    assert d["ExecStart"] == [
        "/opt/dock-agent/venv/bin/dock-screen --config /etc/dock-agent/dock-agent.toml"]
    assert d["DynamicUser"] == ["yes"] and d["SupplementaryGroups"] == ["dock-agent"]
    assert d["TemporaryFileSystem"] == ["/etc/dock-agent:ro"]
    assert d["BindReadOnlyPaths"] == ["/etc/dock-agent/dock-agent.toml",
                                      "-/etc/dock-agent/screen.token"]
    assert set(d["InaccessiblePaths"]) == {"-/var/lib/dock-agent", "-/run/dock-agent/media"}
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["localhost"]
    exe = Path(sys.executable).with_name("dock-screen")
    if not exe.exists():
        pytest.skip("dock-screen entry point not installed")
    unit = tmp_path / "dock-screen.service"
    unit.write_text(source.read_text().replace("/opt/dock-agent/venv/bin/dock-screen", str(exe)))
    run = subprocess.run([tool("systemd-analyze"), "verify", unit], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([tool("systemd-analyze"), "security", "--offline=true", unit],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for dock-screen\.service: (\d+\.\d+)", run.stdout)
    assert m and float(m.group(1)) <= 2.0, run.stdout[-500:]
