"""scripts/demo end to end (broker + dock-sim + agent + live view + final checks), Ctrl-C,
and the live view's pure parts."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from agent.dockctl import watch
from hw_sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
# Footage files per recorder in the demo's scenario.
FOOTAGE = {r.serial: len(r.footage.file_sizes)
           for r in load_scenario(REPO / "config" / "demo-scenario.toml").recorders.values()}

needs_mosquitto = pytest.mark.skipif(not Path("/usr/sbin/mosquitto").exists(),
                                     reason="mosquitto is not installed")


class Demo:
    """scripts/demo in its own session, its output collected, its descendants tracked."""

    def __init__(self, state: Path, **extra_env: str) -> None:
        # The story's own give-up time, generous: a loaded machine is slow, not broken.
        self.state = state
        env = {**os.environ, "DOCK_SKIP_BOOTSTRAP": "1", "DOCK_DEMO_STATE": str(state),
               "DOCK_DEMO_SECONDS": "500", **extra_env}
        self.proc = subprocess.Popen([REPO / "scripts" / "demo"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._tracker = threading.Thread(target=self._track, daemon=True)
        self._tracker.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _track(self) -> None:
        while self.proc.poll() is None:
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    self.seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.5)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float, file: Path | None = None) -> None:
        """Until `needle` is in the output (or in `file`)."""
        def text() -> str:
            if file is None:
                return self.text
            return file.read_text() if file.exists() else ""

        deadline = time.monotonic() + timeout
        while needle not in text():
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited ({self.proc.returncode}) before {needle!r}:\n"
                            + self.text[-4000:])
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {needle!r}:\n" + self.text[-4000:])
            time.sleep(0.2)

    def finish(self, timeout: float) -> int:
        try:
            status = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                # the object store's daemons run in their own sessions: stop them too
                subprocess.run([sys.executable, "-m", "hw_sim.rgw", "down",
                                str(self.state / "s3")], check=False, timeout=60)
        self._reader.join(timeout=5)
        self._tracker.join(timeout=5)
        return status

    def leftovers_after(self, timeout: float) -> list[psutil.Process]:
        """What still runs once every descendant had `timeout` s to exit. (A FUSE server
        whose simulator is gone unmounts and exits on its own: SIGTERM from the kernel
        when its parent dies.)"""
        _, alive = psutil.wait_procs(self.leftovers(), timeout=timeout)
        return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def leftovers(self) -> list[psutil.Process]:
        left = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.NoSuchProcess:
                pass
        return left


def section(text: str, title: str) -> str:
    """The text of one `=== title` section of the demo's closing output."""
    start = text.index(f"=== {title}")
    end = text.find("\n=== ", start + 4)
    return text[start:] if end < 0 else text[start:end]


@needs_mosquitto
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("fuse", [True, False], ids=["fuse", "no-fuse"])
def test_demo_tells_the_whole_story_and_stops_by_itself(tmp_path: Path, fuse: bool) -> None:
    """With FUSE the recorder leaves at a byte in the middle of a file (when FUSE works
    here); without, the demo pulls it out by a dock-sim command."""
    state = tmp_path / "demo"
    # The no-FUSE run also uploads to a local object store (Ceph RGW) and purges what the
    # store acknowledged; the FUSE run keeps everything on the dock.
    upload = not fuse
    demo = Demo(state, **({"DOCK_DEMO_NO_S3": "1"} if fuse else {"DOCK_DEMO_NO_FUSE": "1"}))
    status = demo.finish(timeout=600)
    out = demo.text
    assert status == 0, out[-6000:]
    assert len(demo.seen) >= 4, "broker, dock-sim, agent and the live view should have run"
    assert ("FUSE is not usable here (DOCK_DEMO_NO_FUSE=1)" in out) is not fuse
    left = demo.leftovers_after(120)
    assert not left, left

    # The live view ran (plain snapshots: stdout is a pipe) and showed every bay.
    assert "BAY  RECORDER" in out
    assert re.search(r"^2\s+BWC00002\s+1001002 Zhang Min", out, re.M)

    # Every recorder's footage is in the store under unit/recorder/officer/date (with
    # uploads: only BWC00002's, held by the central service; the rest went after upload).
    kept = {s: c for s, c in FOOTAGE.items() if not upload or s == "BWC00002"}
    for serial, count in FOOTAGE.items():
        stored = [p for p in (state / "evidence").rglob(f"{serial}_*.MP4") if p.is_file()]
        assert len(stored) == kept.get(serial, 0), (serial, stored)
    assert not list((state / "evidence").rglob(".partial-*"))
    if upload:
        uploads = section(out, "upload")
        assert f"uploaded: {sum(FOOTAGE.values())}; conflicts: 0" in uploads, uploads
        assert "s3://demo-evidence/demo-dock/U01/BWC00001/1001001/" in uploads, uploads
        assert "object lock GOVERNANCE" in uploads and "x-amz-meta-blake3: " in uploads
        assert re.search(r"^\d+\s+\S+\s+purged\s+BWC00001", uploads, re.M), uploads  # RFC 3339 time
        held = section(out, "a hold set before BWC00002 docked")
        assert '"ok":true' in held.replace(" ", "") and "hold_set" in held, held

    # The central service's command was carried out.
    assert '"ok":true' in section(out, "central service").replace(" ", "")
    readiness = section(out, "readiness")
    assert re.search(r"^4\s+BWC00004\s+1001004\s+READY", readiness, re.M), readiness
    assert re.search(r"^3\s+BWC00003\s+\S+\s+CHARGING", readiness, re.M), readiness

    verify = section(out, "integrity")
    total = sum(kept.values())
    assert re.search(rf"^OK: \d+ ledger entries, {total} stored files re-hashed, 0 problem",
                     verify, re.M), verify

    # BWC00005 left mid-copy, came back, and the copy resumed and completed.
    kinds = [m.group(1) for m in re.finditer(r"^\d+\s+\S+\s+(\w+)\s+BWC00005", section(
        out, "custody of the recorder"), re.M)]
    assert kinds[0] == "docked", kinds
    second = kinds.index("docked", 1)
    assert "undocked" in kinds[1:second], kinds
    assert kinds[second:].count("offloaded") >= 1, kinds
    assert re.search(r"^5\s+BWC00005\s.*\sREADY\s+complete: \d+ stored", out, re.M)

    # The closing summary shows what the story promised: the CHARGING recorder's ETA and,
    # with FUSE (the pull at an exact byte), the offset where the interrupted copy resumed.
    summary = section(out, "summary")
    assert re.search(r"^BWC00003\s+bay 3\s+CHARGING, ready in about \d+", summary, re.M), summary
    if fuse:
        resumed = re.search(r"^BWC00005 .*resumed at byte (\d+)", summary, re.M)
        assert resumed is not None and int(resumed.group(1)) > 0, summary
    # A clean stop ends the MQTT session cleanly.
    agent_log = (state / "logs" / "agent.log").read_text()
    assert "mqtt disconnected cleanly" in agent_log
    assert "Unspecified error" not in agent_log

    where = section(out, "where to look")
    example = re.search(r"e\.g\. (\S+)", where)
    assert example is not None and Path(example.group(1)).is_file()
    serial = "BWC00002/1001002" if upload else "BWC00005/1001005"
    assert re.search(rf"/U0\d/{serial}/\d{{4}}-\d\d-\d\d/BWC0000", example.group(1))
    assert "mosquitto_sub -h 127.0.0.1 -p " in where
    messages = (state / "logs" / "mqtt-messages.log").read_text()
    assert "dock/v1/demo-dock/" in messages

    if fuse:
        return
    # A second run on the same state finds every file already stored and still ends well.
    again = Demo(state, DOCK_DEMO_NO_FUSE="1")
    status = again.finish(timeout=600)
    out = again.text
    assert status == 0, out[-6000:]
    left = again.leftovers_after(120)
    assert not left, left
    assert "holds an earlier run" in out
    assert "finished without leaving (its files were already stored)" in out
    assert re.search(r"^5\s+BWC00005\s.*\sREADY\s+complete: 0 stored, 6 already stored",
                     out, re.M), out[-6000:]
    assert re.search(rf"^OK: \d+ ledger entries, {total} stored files re-hashed, 0 problem",
                     section(out, "integrity"), re.M)


@needs_mosquitto
@pytest.mark.timeout(600)
def test_demo_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    demo = Demo(state, DOCK_DEMO_NO_S3="1")
    try:
        # Mid-story: the last recorder has just docked, its storage is being read.
        demo.wait_for("BWC00005 docked", 300, file=state / "logs" / "director.log")
    finally:
        if demo.proc.poll() is None:
            os.killpg(demo.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    status = demo.finish(timeout=240)
    assert status == 0, demo.text[-4000:]
    assert "stopping" in demo.text
    assert len(demo.seen) >= 3
    left = demo.leftovers_after(120)
    assert not left, left
    deadline = time.monotonic() + 120
    while str(state) in Path("/proc/self/mounts").read_text():
        assert time.monotonic() < deadline, "a mount of the demo is still there"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_refused_config_stops_the_demo_before_anything_starts(tmp_path: Path) -> None:
    """The agent's --check-config runs before the broker, the object store, dock-sim and
    the agent: its file:line: key problem is on the terminal and the demo exits 2."""
    state = tmp_path / "demo"
    demo = Demo(state, DOCK_DEMO_BROKER="127.0.0.1:70000")  # a port out of range
    status = demo.finish(timeout=240)
    out = demo.text
    assert status == 2, out[-4000:]
    config = state / "dock-agent.toml"
    line = next(n for n, text in enumerate(config.read_text().splitlines(), start=1)
                if text.startswith("port = 70000"))
    assert f"{config}:{line}: mqtt.port: 70000 is out of range" in out, out
    assert f"the agent's configuration {config} is invalid (above): stopping" in out, out
    # nothing was started: no broker, object store, simulator, agent or live view
    assert "using the MQTT broker" not in out and "object store" not in out, out
    assert not (state / "s3").exists() and not (state / "run" / "sim.sock").exists()
    assert not [p for p in (state / "logs").iterdir()], list((state / "logs").iterdir())
    assert not (state / "broker" / "mosquitto.conf").exists()
    assert not demo.leftovers_after(60)


def test_the_demo_config_holds_any_state_directory_name(tmp_path: Path) -> None:
    """A state directory (DOCK_DEMO_STATE) named with a quote, a backslash, `&` or `|`
    still gives a configuration the agent accepts, with exactly that directory in it."""
    state = tmp_path / 'odd "dir" \\ & | x'
    state.mkdir()
    secret = state / "fleet.secret"
    secret.write_bytes((REPO / "config" / "demo-fleet.secret").read_bytes())
    secret.chmod(0o600)
    config = state / "dock-agent.toml"
    script = ('. "$1/scripts/lib/demo.sh"; demo_config "$1/config/dock-agent.demo.toml"'
              ' "$2" "$3" 127.0.0.1 1883 >"$4"')
    subprocess.run(["bash", "-c", script, "demo", str(REPO), str(state), str(secret),
                    str(config)], check=True, timeout=60)
    parsed = tomllib.loads(config.read_text())
    assert parsed["dock"]["state_dir"] == f"{state}/state", parsed["dock"]
    assert parsed["recorder"]["fleet_secret_file"] == str(secret)
    checked = subprocess.run([Path(sys.executable).parent / "dock-agent", "--check-config",
                              str(config)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr


# --- the live view's pure parts -----------------------------------------------------------

def _bay(bay: str, state: str, **extra: object) -> dict[str, object]:
    return {"bay": bay, "serial": f"BWC0000{bay}", "state": state, **extra}


def test_watch_done_waits_for_every_expected_recorder_and_offload() -> None:
    finished = {"outcome": "complete", "stored": 1}
    assert not watch.done(None, 1)
    assert not watch.done({"bays": [_bay("1", "released", offload_result=finished)]}, 2)
    assert not watch.done({"bays": [_bay("1", "offloading", offload_result=finished)]}, 1)
    assert not watch.done({"bays": [_bay("1", "released")]}, 1)
    assert watch.done({"bays": [_bay("1", "released", offload_result=finished)]}, 1)
    # pulled out mid-copy: its session is still listed while it winds down
    interrupted = {"outcome": "interrupted", "stored": 3}
    assert not watch.done({"bays": [_bay("1", "released", offload_result=finished),
                                    _bay("2", "removed", offload_result=interrupted)]}, 2)


def test_watch_render_shows_progress_officer_and_reasons() -> None:
    status = {"dock_id": "d1", "broker_connected": True, "outbox_depth": 0, "bays": [
        _bay("1", "offloading", officer_no="1001001", officer_name="李伟", battery_percent=35,
             offload={"bytes_done": 50, "bytes_total": 100},
             readiness={"verdict": "CHARGING", "eta_s": 600,
                        "reasons": [{"code": "battery_low", "message": "battery 35% < 60%"}]}),
        _bay("2", "released", offload_result={"outcome": "complete", "stored": 2,
                                              "already_stored": 1},
             readiness={"verdict": "NOT_READY",
                        "reasons": [{"code": "no_officer", "message": "no officer assigned"}]}),
    ]}
    text = watch.render(watch.Snapshot(status, [(0.0, "docked  bay 1 BWC00001")]), now=0.0)
    assert "1001001 李伟" in text and "(none)" in text
    assert "########" in text and "50.0%" in text
    assert "complete: 2 stored, 1 already stored" in text
    assert "bay 1 BWC00001: CHARGING: battery 35% < 60% (ready in about 10m00s)" in text
    assert "bay 2 BWC00002: NOT_READY: no officer assigned" in text
    assert "docked  bay 1 BWC00001" in text
    assert "waiting for the agent (refused)" in watch.render(watch.Snapshot(None, [], "refused"))
    narrow = watch.render(watch.Snapshot(status, []), now=0.0, columns=80)
    assert "李伟" not in narrow and re.search(r"^1 .*1001001 .*CHARGING .*50\.0%", narrow, re.M)


def test_watch_run_plain_prints_snapshots_and_stops_when_done() -> None:
    frames = iter([
        {"dock_id": "d1", "bays": [_bay("1", "offloading")]},
        {"dock_id": "d1", "bays": [_bay("1", "released",
                                        offload_result={"outcome": "complete", "stored": 1})]},
    ])
    out = io.StringIO()
    code = watch.run(lambda: next(frames), None, out=out, interval_s=0, plain=True,
                     plain_interval_s=0, until_done=1, timeout_s=30)
    assert code == 0
    assert out.getvalue().splitlines().count("---") == 2
    assert "\x1b[" not in out.getvalue()


def test_watch_run_gives_up_after_timeout_while_agent_unreachable() -> None:
    def fetch() -> dict[str, object]:
        raise ConnectionRefusedError("agent not running")

    out = io.StringIO()
    code = watch.run(fetch, None, out=out, interval_s=0.01, plain=True, until_done=1,
                     timeout_s=0.05)
    assert code == 1
    assert "waiting for the agent (agent not running)" in out.getvalue()
    assert "not done after" in out.getvalue()


def test_watch_clip_counts_terminal_cells() -> None:
    assert watch.clip("abcdef", 4) == "abcd"
    assert watch.clip("ab李伟cd", 5) == "ab李"
    assert watch.clip("short", 80) == "short"
