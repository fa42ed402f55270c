"""Shell scripts: shellcheck, scripts/test exit codes, install/uninstall into a DESTDIR."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELL_SCRIPTS = [
    REPO / "scripts" / "test",
    REPO / "scripts" / "demo",
    REPO / "scripts" / "lib" / "bootstrap.sh",
    REPO / "packaging" / "install.sh",
    REPO / "packaging" / "uninstall.sh",
    REPO / "packaging" / "build-deb.sh",
    REPO / ".ci" / "run",
]


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt install shellcheck)")
    run = subprocess.run([shellcheck, "-x", *SHELL_SCRIPTS], capture_output=True, text=True,
                         cwd=REPO)
    assert run.returncode == 0, run.stdout


def test_scripts_are_executable() -> None:
    for script in [*SHELL_SCRIPTS[:2], *SHELL_SCRIPTS[3:], REPO / "scripts" / "gen-config"]:
        assert script.stat().st_mode & stat.S_IXUSR, script


def run_test_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCK_SKIP_BOOTSTRAP": "1", "DOCK_TEST_JOBS": "0"}
    env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run([REPO / "scripts" / "test", *args, "-p", "no:cacheprovider"],
                          capture_output=True, text=True, env=env, timeout=110)


def test_scripts_test_propagates_failures_and_keeps_the_summary(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(
        "def test_ok():\n    pass\n\ndef test_broken():\n    assert 1 == 2\n")
    run = run_test_script(tmp_path, str(tmp_path / "test_sample.py"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout


def test_scripts_test_passes_and_fails_on_no_tests(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text("def test_ok():\n    pass\n")
    ok = run_test_script(tmp_path, str(tmp_path / "test_sample.py"))
    assert ok.returncode == 0 and "1 passed" in ok.stdout
    (tmp_path / "empty").mkdir()
    empty = run_test_script(tmp_path, str(tmp_path / "empty"))
    assert empty.returncode == 5
    assert "no tests were collected" in empty.stderr


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([REPO / "packaging" / "install.sh", "--destdir", destdir, "--no-venv",
                           *args], capture_output=True, text=True, timeout=60, cwd=destdir.parent)


def test_install_into_destdir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = install(root, "--dock-id", "east dock/2")
    assert run.returncode == 0, run.stdout + run.stderr
    config = root / "etc/dock-agent/dock-agent.toml"
    secret = root / "etc/dock-agent/fleet.secret"
    assert stat.S_IMODE((root / "etc/dock-agent").stat().st_mode) == 0o750
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640
    assert 'id = "east-dock-2"' in config.read_text()
    assert len(bytes.fromhex(secret.read_text().strip())) == 32
    assert (root / "opt/dock-agent/README.md").exists()
    assert sorted(p.name for p in (root / "opt/dock-agent/docs").iterdir()) == \
        sorted(p.name for p in (REPO / "docs").iterdir())
    assert (root / "etc/systemd/system/dock-agent.service").read_text() == \
        (REPO / "systemd/dock-agent.service").read_text()
    assert 'ATTRS{idVendor}=="1d6b"' in (root / "etc/udev/rules.d/90-dock-agent.rules").read_text()
    for unit in ("dock-mount.socket", "dock-mount.service", "dock-screen.service"):
        assert (root / "etc/systemd/system" / unit).exists() == (REPO / "systemd" / unit).exists()

    # Re-install: the operator's config and secret stay; rules follow the config.
    edited = config.read_text().replace('vid = "1d6b"', 'vid = "2CA3"')
    config.write_text(edited)
    old_secret = secret.read_text()
    run = install(root, "--dock-id", "other")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "keeping existing" in run.stdout
    assert config.read_text() == edited and secret.read_text() == old_secret
    rules = (root / "etc/udev/rules.d/90-dock-agent.rules").read_text()
    assert 'ATTRS{idVendor}=="2ca3"' in rules and "1d6b" not in rules


def test_install_refuses_an_invalid_config_for_the_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/dock-agent").mkdir(parents=True)
    (root / "etc/dock-agent/dock-agent.toml").write_text('[dock]\nid = "d"\nbogus = 1\n')
    run = install(root)
    assert run.returncode != 0
    assert "dock.bogus: unknown key" in run.stderr
    assert not (root / "etc/udev/rules.d/90-dock-agent.rules").exists()


def test_uninstall_keeps_evidence_and_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert install(root).returncode == 0
    evidence = root / "var/lib/dock-agent/evidence/2026/clip.mp4"
    evidence.parent.mkdir(parents=True)
    evidence.write_bytes(b"footage")
    run = subprocess.run([REPO / "packaging" / "uninstall.sh", "--destdir", root],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not (root / "opt/dock-agent").exists()
    assert list((root / "etc/systemd/system").iterdir()) == []
    assert not (root / "etc/udev/rules.d/90-dock-agent.rules").exists()
    assert evidence.read_bytes() == b"footage"
    assert (root / "etc/dock-agent/dock-agent.toml").exists()
    assert (root / "etc/dock-agent/fleet.secret").exists()
    assert "kept:" in run.stdout


def bash_with_bootstrap(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f'set -euo pipefail; . "$1"; {script}', "bash",
                           REPO / "scripts" / "lib" / "bootstrap.sh"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)


def test_bootstrap_finds_missing_apt_packages() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    run = bash_with_bootstrap("missing_apt_packages bash no-such-package-dock-agent", {})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["no-such-package-dock-agent"]


def test_bootstrap_reinstalls_the_venv_only_when_pyproject_changes(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls"
    fake = venv / "bin" / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(0o755)
    env = {"DOCK_VENV": str(venv)}
    first = bash_with_bootstrap("ensure_venv", env)
    assert first.returncode == 0, first.stderr
    assert calls.read_text().splitlines() == [
        f"-m pip install -q --disable-pip-version-check -e {REPO}[dev] -e {REPO}/packaging/sim"]
    again = bash_with_bootstrap("ensure_venv", env)  # stamp matches: nothing to do
    assert again.returncode == 0 and len(calls.read_text().splitlines()) == 1
    (venv / ".dock-agent-pyproject.sha256").write_text("stale\n")
    bash_with_bootstrap("ensure_venv", env)
    assert len(calls.read_text().splitlines()) == 2


def test_deb_package(tmp_path: Path) -> None:
    """The .deb carries wheels and an installer that works from its own layout."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    env = {**os.environ, "DOCK_DEB_PIP_ARGS": "--no-deps"}  # the agent's wheel only
    run = subprocess.run([REPO / "packaging" / "build-deb.sh", "--out", tmp_path / "out"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    deb = Path(run.stdout.strip())
    fields = subprocess.run(["dpkg-deb", "--field", deb], capture_output=True, text=True).stdout
    assert "Package: dock-agent" in fields and "Depends: python3 (>= 3.11), python3-venv" in fields
    postinst = subprocess.run(["dpkg-deb", "--info", deb, "postinst"], capture_output=True,
                              text=True).stdout
    assert "install.sh --wheels /opt/dock-agent/wheels" in postinst
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert list((root / "opt/dock-agent/wheels").glob("dock_agent-*.whl"))
    # the shipped installer, run from the package layout
    target = tmp_path / "target"
    run = subprocess.run([root / "opt/dock-agent/share/packaging/install.sh", "--destdir",
                          target, "--no-venv"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path,
                         timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (target / "etc/dock-agent/dock-agent.toml").exists()
    assert (target / "etc/systemd/system/dock-agent.service").exists()
