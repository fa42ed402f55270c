"""dock-screen's command line: every refusal is one clear message on stderr and exit 2,
before anything listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.screen.cli import EXIT_CONFIG, main

BASE = ('[dock]\nid = "d1"\n[devices]\nsource = "sim"\n[[devices.allow]]\nvid = "1209"\n'
        'pid = "d0c5"\n[mqtt]\nenabled = false\n')


def refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str], screen: str,
            *args: str) -> str:
    config = tmp_path / "dock.toml"
    config.write_text(BASE + "[screen]\n" + screen)
    assert main(["--config", str(config), *args]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_invalid_config_lists_every_issue(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(tmp_path, capsys, "port = -1\nbogus = 1\n")
    lines = err.splitlines()
    assert lines[0] == "dock-screen: invalid configuration:"
    where = f"  {tmp_path}/dock.toml:"
    assert len(lines) == 3 and all(line.startswith(where) for line in lines[1:])
    assert "screen.port" in err and "screen.bogus" in err


def test_port_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert refusal(tmp_path, capsys, "", "--port", "70000") == \
        "dock-screen: port 70000 out of range\n"


def test_token_file_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(tmp_path, capsys, f'token_file = "{tmp_path}/absent"\n')
    assert err == f"dock-screen: cannot read token_file {tmp_path}/absent: " \
                  "No such file or directory\n"
    (tmp_path / "short").write_text("abc\n")
    err = refusal(tmp_path, capsys, f'token_file = "{tmp_path}/short"\n')
    assert err == f"dock-screen: the token in {tmp_path}/short is shorter than 16 characters\n"


def test_lan_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refusal(tmp_path, capsys, "", "--listen", "0.0.0.0")
    assert err.startswith("dock-screen: listen = '0.0.0.0' is not loopback: set [screen] "
                          "token_file")


def test_lights_need_pins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = refusal(tmp_path, capsys, "lights = true\n").splitlines()
    assert lines[0] == "dock-screen: invalid configuration:", lines
    assert lines[1].endswith(":11: screen.lights: needs screen.light_pins (lights = true,"
                             " light_pins = {}): the bay lights are switched on with no"
                             " bay's light named"), lines
