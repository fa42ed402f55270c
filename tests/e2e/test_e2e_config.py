"""Configuration errors, through the real command lines: a broken file is refused with the
key and line named, and the agent will not start without its fleet secret."""

from __future__ import annotations

import subprocess

from .conftest import RigFactory
from .harness import PYTHON


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "agent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


async def test_check_config_names_key_and_line(make_rig: RigFactory) -> None:
    rig = make_rig(None)
    ok = run("--check-config", str(rig.config))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    text = rig.config.read_text()
    text = text.replace("max_concurrent = 2", "max_concurrent = 0")
    text = text.replace('level = "info"', 'level = "loud"')
    rig.config.write_text(text)
    bad = run("--check-config", str(rig.config))
    assert bad.returncode == 2
    err = bad.stderr
    # "<file>:<line>: <key>: <what is wrong>"
    where = f"{rig.config}:{line_of(text, 'max_concurrent')}: offload.max_concurrent:"
    assert where in err, err
    where = f"{rig.config}:{line_of(text, 'level = ')}: logging.level:"
    assert where in err and '"loud"' in err, err
    assert "2 problems" in err
    # The agent itself refuses the same file before starting anything.
    refused = run("--config", str(rig.config))
    assert refused.returncode == 2 and "offload.max_concurrent" in refused.stderr
    assert not rig.db_path.exists()


async def test_missing_fleet_secret_refuses_to_start(make_rig: RigFactory) -> None:
    rig = make_rig(None)
    rig.secret_file.unlink()
    proc = run("--config", str(rig.config))
    assert proc.returncode != 0
    assert "recorder.fleet_secret_file" in proc.stderr, proc.stderr
    assert str(rig.secret_file) in proc.stderr
    assert not rig.db_path.exists()  # nothing was started
    # A secret too short to be one is refused the same way.
    rig.secret_file.write_bytes(b"short\n")
    proc = run("--config", str(rig.config))
    assert proc.returncode != 0 and "fleet secret" in proc.stderr, proc.stderr
    assert not rig.db_path.exists()
