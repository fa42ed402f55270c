"""The production wheel (what the .deb installs) carries the agent and the host side of the
firmware bridge, nothing of the simulator, the benchmarks or the tests; the simulator is
the development package packaging/sim with the `dock-sim` command."""

from __future__ import annotations

import ast
import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("agent", "firmware_bridge")
DEV_ONLY = ("hw_sim", "bench", "tests")
COMMANDS = {"dock-agent", "dockctl", "dock-verify", "dock-screen"}
# the recorder's end of the wire protocol: runs on (simulated) recorders, never on a dock
DEVICE_SIDE = "firmware_bridge/device.py"


def _build(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the source tree with every package in it (exclusion must come from the
    packaging configuration, not from a missing directory); builds leave no trace here."""
    root = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".mypy_cache")
    for name in (*SHIPPED, *DEV_ONLY, "packaging", "config", "docs"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    return root


@pytest.fixture(scope="module")
def wheel(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(_build(tree, tmp_path_factory.mktemp("wheel")))


def _entry_points(archive: zipfile.ZipFile) -> set[str]:
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(archive.read(name).decode())
    return set(parser["console_scripts"])


def test_the_wheel_ships_only_the_agent_and_the_bridge(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == set(SHIPPED)
    expected = {p.relative_to(REPO).as_posix() for top in SHIPPED
                for p in (REPO / top).rglob("*.py")} - {DEVICE_SIDE}
    assert expected <= set(names), sorted(expected - set(names))
    # data the agent reads at run time
    assert any(n.startswith("agent/mqtt/schemas/") and n.endswith(".json") for n in names)
    assert any(n.startswith("agent/screen/static/") for n in names)
    assert any(n.endswith(".po") for n in names)
    assert _entry_points(wheel) == COMMANDS  # no dock-sim


def test_no_shipped_module_imports_a_dev_package(wheel: zipfile.ZipFile) -> None:
    offenders = []
    for name in wheel.namelist():
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(wheel.read(name), name)):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom)
                       and node.level == 0 else [])
            offenders += [f"{name}: {m}" for m in modules if m.split(".")[0] in DEV_ONLY]
    assert offenders == []


@pytest.mark.xfail((REPO / DEVICE_SIDE).exists(), strict=True,
                   reason="the device side of the bridge still lives in firmware_bridge/")
def test_the_device_side_of_the_bridge_is_not_shipped(wheel: zipfile.ZipFile) -> None:
    assert DEVICE_SIDE not in wheel.namelist()


def test_the_simulator_is_a_dev_package_with_dock_sim(
        tree: Path, tmp_path: Path) -> None:
    sim = zipfile.ZipFile(_build(tree / "packaging" / "sim", tmp_path))
    tops = {n.split("/")[0] for n in sim.namelist() if ".dist-info/" not in n}
    assert tops == {"hw_sim"}
    assert "hw_sim/scenarios/demo.toml" in sim.namelist()
    assert _entry_points(sim) == {"dock-sim"}
