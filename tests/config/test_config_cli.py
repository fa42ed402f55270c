"""`dock-agent` command line: --check-config, --udev-rules, exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import EXIT_CONFIG, EXIT_OK, main

Write = Callable[[str], Path]


def test_check_config_ok_prints_one_line(write_config: Write, minimal: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(minimal)
    assert main(["--check-config", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"{path}: OK: dock dock-07: devices udev (1 allowed)")


def test_check_config_reports_every_problem(write_config: Write, minimal: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(minimal + "\n[offload]\nbuffer_mib = 100\nbufers = 2\n")
    assert main(["--check-config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "invalid configuration (2 problems)" in err
    assert f"{path}:16: offload.buffer_mib: 100 is out of range (allowed 1..64)" in err
    assert f"{path}:17: offload.bufers: unknown key" in err


def test_sim_config_without_allowlist_is_refused_clearly(
        write_config: Write, capsys: pytest.CaptureFixture[str]) -> None:
    """A dock-sim config that would refuse every recorder: `--check-config` and the agent's
    start both name file, line and key, exit 2, and print no traceback."""
    path = write_config('[dock]\nid = "d1"\n\n[devices]\nsource = "sim"\n\n[mqtt]\n'
                        'enabled = false\n\n[recorder]\nfleet_secret_file = "fleet.secret"\n')
    for args in (["--check-config", str(path)], ["--config", str(path)]):
        assert main(args) == EXIT_CONFIG
        captured = capsys.readouterr()
        assert f"{path}:4: devices.allow: no recorders are allowed" in captured.err
        assert "Traceback" not in captured.err + captured.out
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "--config", str(path)],
                          capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == EXIT_CONFIG and "devices.allow" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "none.toml")]) == EXIT_CONFIG
    assert "cannot read config file" in capsys.readouterr().err


def test_set_overrides_on_the_command_line(write_config: Write, minimal: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(minimal)
    assert main(["--check-config", str(path), "--set", "mqtt.port=0"]) == EXIT_CONFIG
    assert "--set: mqtt.port: 0 is out of range" in capsys.readouterr().err


def test_udev_rules_list_exactly_the_allowed_ids(write_config: Write, minimal: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # a second [[devices.allow]] entry, placed before the [recorder] table
    head, _, _ = minimal.partition("[recorder]")
    path = write_config(head + '[[devices.allow]]\nvid = "2CA3"\npid = "0031"\n\n'
                        + "[recorder]" + minimal.partition("[recorder]")[2])
    assert main(["--udev-rules", "--config", str(path)]) == EXIT_OK
    rules = capsys.readouterr().out
    matches = [line for line in rules.splitlines() if "ATTRS{idVendor}" in line]
    assert matches == [
        'ATTRS{idVendor}=="1d6b", ATTRS{idProduct}=="0104", GOTO="dock_agent_recorder"',
        'ATTRS{idVendor}=="2ca3", ATTRS{idProduct}=="0031", GOTO="dock_agent_recorder"',
    ]
    # everything that changes a device comes after the allowlist match
    label = rules.index('LABEL="dock_agent_recorder"')
    for needle in ("DOCK_AGENT_RECORDER", 'GROUP="dialout"', "UDISKS_IGNORE"):
        assert rules.index(needle) > label
    assert rules.index('GOTO="dock_agent_end"\nLABEL="dock_agent_recorder"') < label


def test_installed_entry_point(write_config: Write, minimal: str) -> None:
    exe = Path(sys.executable).with_name("dock-agent")
    if not exe.exists():
        pytest.skip("dock-agent entry point not installed in this environment")
    path = write_config(minimal)
    ok = subprocess.run([exe, "--check-config", path], capture_output=True, text=True)
    assert ok.returncode == 0 and ": OK: " in ok.stdout
    path.write_text(minimal.replace('id = "dock-07"', 'id = 7'))
    bad = subprocess.run([exe, "--check-config", path], capture_output=True, text=True)
    assert bad.returncode == 2 and "dock.id: expected string, got integer 7" in bad.stderr


def test_config_tools_need_only_the_standard_library() -> None:
    """packaging/install.sh runs `python3 -m agent.cli` from the source tree, before any venv."""
    code = (
        "import sys; import agent.cli; "
        "extra = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) "
        "- {'agent', '__main__'}; print(sorted(m for m in extra if not m.startswith('_')))"
    )
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(repo)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
