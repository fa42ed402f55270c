"""scripts/demo end to end: broker + dock-sim + agent; footage arrives; Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

REPO = Path(__file__).resolve().parents[2]
FOOTAGE_FILES = 4 + 3 + 2  # the first three recorders of config/demo-scenario.toml


def wait_for(demo: subprocess.Popen[str], predicate: Callable[[], bool], timeout: float,
             what: str, output: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if demo.poll() is not None:
            pytest.fail(f"the demo exited ({demo.returncode}) before {what}:\n"
                        + "".join(output[-40:]))
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n" + "".join(output[-40:]))


@pytest.mark.timeout(180)
def test_demo_offloads_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    if not Path("/usr/sbin/mosquitto").exists():
        pytest.skip("mosquitto is not installed")
    state = tmp_path / "demo"
    env = {**os.environ, "DOCK_SKIP_BOOTSTRAP": "1", "DOCK_DEMO_STATE": str(state)}
    demo = subprocess.Popen([REPO / "scripts" / "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    output: list[str] = []

    def pump() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        wait_for(demo, lambda: any("demo running" in line for line in output), 90,
                 "the demo started", output)
        found = re.search(r"MQTT broker on 127\.0\.0\.1:(\d+)", "".join(output))
        assert found is not None
        port = int(found.group(1))
        children = psutil.Process(demo.pid).children(recursive=True)
        assert len(children) >= 3

        def all_stored() -> bool:
            files = [p for p in (state / "evidence").rglob("*.MP4")
                     if p.is_file() and not p.name.startswith(".partial-")]
            return len(files) >= FOOTAGE_FILES

        wait_for(demo, all_stored, 90, f"{FOOTAGE_FILES} footage files were stored", output)
        sub = subprocess.run(["mosquitto_sub", "-p", str(port), "-t", "dock/v1/demo-dock/#",
                              "-C", "1", "-W", "20", "-v"], capture_output=True, text=True)
        assert sub.stdout.startswith("dock/v1/demo-dock/"), sub.stdout + sub.stderr
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        status = demo.wait(timeout=60)
        reader.join(timeout=5)
    assert status == 0, "".join(output)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
