"""The dock-mount systemd units: verified by systemd's own tools, consistent with the code."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings import MountSettings

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "systemd" / "dock-mount.service"
SOCKET = REPO / "systemd" / "dock-mount.socket"


def directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_units_verify_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    python = str(Path(sys.executable))
    (tmp_path / SERVICE.name).write_text(
        SERVICE.read_text().replace("/opt/dock-agent/venv/bin/python", python)
    )
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    run = subprocess.run([analyze, "verify", SOCKET.name, SERVICE.name],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "dock-mount" not in run.stderr, run.stderr


def test_service_runs_the_helper_on_the_socket_the_agent_uses() -> None:
    service, socket_unit = directives(SERVICE), directives(SOCKET)
    argv = shlex.split(service["ExecStart"][0])
    assert argv[1:3] == ["-m", "agent.mount.helper"]
    socket_path = argv[argv.index("--socket") + 1]
    assert socket_unit["ListenStream"] == [socket_path]
    assert Path(socket_path) == MountSettings().helper_socket
    # the mount root sits in the socket's root-owned directory, not in the agent's
    assert argv[argv.index("--mount-root") + 1] == "/run/dock-agent-mount/media"
    assert Path(argv[argv.index("--mount-root") + 1]).parent == Path(socket_path).parent
    assert argv[argv.index("--owner") + 1] == "dock-agent"
    assert socket_unit["SocketMode"] == ["0660"] and socket_unit["SocketGroup"] == ["dock-agent"]


def test_service_stays_in_the_host_mount_namespace() -> None:
    # Any of these gives the service its own mount namespace: its mounts would not reach
    # the agent. DeviceAllow/DevicePolicy would keep it from the recorders' block devices.
    service = directives(SERVICE)
    for forbidden in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts",
                      "ReadOnlyPaths", "ProtectKernelTunables", "ProtectKernelModules",
                      "ProtectKernelLogs", "ProtectControlGroups", "PrivateDevices",
                      "DevicePolicy", "DeviceAllow", "ProtectClock", "TemporaryFileSystem"):
        assert forbidden not in service, forbidden
    assert "CAP_SYS_ADMIN" in service["CapabilityBoundingSet"][0]
    assert service["NoNewPrivileges"] == ["yes"]


def test_exposure_is_at_most_3_6(tmp_path: Path) -> None:
    """`systemd-analyze security` scored the helper 4.2 with five capabilities; with the
    mount root in a root-owned directory it needs CAP_SYS_ADMIN alone."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    (tmp_path / SERVICE.name).write_text(
        SERVICE.read_text().replace("/opt/dock-agent/venv/bin/python", sys.executable)
    )
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    run = subprocess.run([analyze, "security", "--offline=yes", "--no-pager",
                          str(tmp_path / SERVICE.name)],
                         cwd=tmp_path, capture_output=True, text=True)
    if "--offline" in run.stderr and "unrecognized" in run.stderr:
        pytest.skip("this systemd-analyze cannot score unit files offline")
    m = re.search(r"Overall exposure level for dock-mount.service: (\d+\.\d)", run.stdout)
    assert m is not None, run.stdout + run.stderr
    assert float(m.group(1)) <= 3.6, run.stdout
    assert service_caps() == ["CAP_SYS_ADMIN"]


def service_caps() -> list[str]:
    return directives(SERVICE)["CapabilityBoundingSet"][0].split()
