"""The rig's clean stop fails with the agent's stacks, well inside a test's own timeout."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from .harness import HANG_GUARD_S, PYTHON, AgentProcess

# A process that, like a hung agent, ignores SIGTERM and dumps its stacks on SIGUSR1.
HUNG = """
import faulthandler, signal, sys, threading
faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def writer_never_joined():
    threading.Event().wait()
t = threading.Thread(target=writer_never_joined)
t.start()
print("up", flush=True)
t.join()
"""


def test_a_stop_that_hangs_fails_with_the_stacks_in_the_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "agent.log"
    agent = AgentProcess(tmp_path / "unused.toml", log_path)
    with log_path.open("ab") as log:
        agent.proc = subprocess.Popen([PYTHON, "-c", HUNG], stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + HANG_GUARD_S
    while "up" not in agent.log_text():
        assert agent.running() and time.monotonic() < deadline, agent.log_text()
        time.sleep(0.05)
    with pytest.raises(AssertionError, match="did not stop") as failed:
        agent.terminate(timeout=1.0)
    assert "writer_never_joined" in str(failed.value)
    assert agent.exited()
