"""The demo installs what it runs, never the lint tools only the test command needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def packages(mode: str) -> set[str]:
    script = (f'. "{REPO}/scripts/lib/bootstrap.sh"\n'
              'ensure_apt() { printf "%s\\n" "$@"; }\n'
              'ensure_venv() { :; }\n'
              f'bootstrap {mode}\n')
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    return set(run.stdout.split())


def test_demo_does_not_install_shellcheck_and_tests_do() -> None:
    demo, test = packages("demo"), packages("test")
    assert "shellcheck" not in demo and "mosquitto" in demo
    assert "shellcheck" in test and demo < test
    for script, mode in (("scripts/demo", "bootstrap demo\n"),
                         ("scripts/test", "bootstrap test\n")):
        assert mode in (REPO / script).read_text(), script
