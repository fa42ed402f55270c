"""Hostile input files through the real `dock-agent` command: secrets others may read, a
FIFO or a device given as the config or a secret, a symlinked state directory, overlapping
footage directories. Each is a clear exit-2 error: no hang, no traceback, nothing chmodded
through a symlink."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Write = Callable[[str], Path]
REPO = Path(__file__).resolve().parents[2]
NOGROUP = 65534  # a group the agent is not in


def run_agent(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real command line; a hang fails the test instead of blocking the suite."""
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(("mode", "gid", "reason"), [
    (0o644, None, "accessible by others (mode 0644)"),
    (0o604, None, "accessible by others (mode 0604)"),
    (0o620, None, "writable by its group (mode 0620)"),
    (0o640, NOGROUP, "readable by group"),
])
def test_secret_readable_by_others_is_refused(minimal: str, write_config: Write, config_dir: Path,
                                              mode: int, gid: int | None, reason: str) -> None:
    secret = config_dir / "fleet.secret"
    if gid is not None:
        os.chown(secret, -1, gid)
    secret.chmod(mode)
    path = write_config(minimal)
    refused(run_agent("--check-config", path), ":9: recorder.fleet_secret_file:", reason)
    refused(run_agent("--config", path), reason)  # the agent itself will not start either
    assert (secret.stat().st_mode & 0o777) == mode  # reported, not silently "fixed"


def test_installer_layout_root_and_agent_group_0640_is_accepted(minimal: str, write_config: Write,
                                                                config_dir: Path) -> None:
    secret = config_dir / "fleet.secret"
    os.chown(secret, 0, os.getegid())  # root:<the agent's group>
    secret.chmod(0o640)
    proc = run_agent("--check-config", write_config(minimal))
    assert proc.returncode == 0 and ": OK: " in proc.stdout, proc.stderr


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/null", "directory"])
def test_fifo_or_device_as_secret_is_refused(minimal: str, write_config: Write, config_dir: Path,
                                             kind: str) -> None:
    secret = config_dir / "fleet.secret"
    secret.unlink()
    if kind == "fifo":
        os.mkfifo(secret, 0o600)  # nobody ever writes: reading it would hang forever
        expected = "is a FIFO, not a regular file"
    elif kind == "directory":
        secret.mkdir(0o700)
        expected = "is a directory, not a regular file"
    else:
        secret.symlink_to(kind)
        expected = "is a character device, not a regular file"
    refused(run_agent("--check-config", write_config(minimal)),
            "recorder.fleet_secret_file:", expected)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/urandom"])
def test_fifo_or_device_as_config_is_refused(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "dock-agent.toml"
    if kind == "fifo":
        os.mkfifo(config, 0o600)
        expected = "cannot read config file: is a FIFO"
    else:
        config = Path(kind)
        expected = "cannot read config file: is a character device"
    refused(run_agent("--check-config", config), expected)
    refused(run_agent("--config", config), expected)


def test_mqtt_password_and_keys_must_be_private(minimal: str, write_config: Write,
                                                config_dir: Path) -> None:
    for name in ("password", "ca.pem", "c.pem", "k.pem", "dock.key"):
        (config_dir / name).write_text("-----BEGIN-----\n")
        (config_dir / name).chmod(0o644)
    text = minimal.replace("[mqtt]\n", '[mqtt]\nusername = "dock-07"\n'
                           'password_file = "password"\n')
    refused(run_agent("--check-config", write_config(text)),
            "mqtt.password_file: password file", "accessible by others")
    tls = minimal.replace("tls = false\nport = 1883\n",
                          'ca_file = "ca.pem"\ncert_file = "c.pem"\nkey_file = "k.pem"\n')
    proc = run_agent("--check-config", write_config(tls))
    refused(proc, "mqtt.key_file: client key", "accessible by others")
    assert "mqtt.ca_file" not in proc.stderr and "mqtt.cert_file" not in proc.stderr  # public
    signing = minimal.replace('[dock]\nid = "dock-07"\n',
                              '[dock]\nid = "dock-07"\nkey_file = "dock.key"\n')
    refused(run_agent("--check-config", write_config(signing)),
            ":3: dock.key_file: signing key", "has mode 0644; it must be 0600")


def test_fifo_password_file_is_refused(minimal: str, write_config: Write, config_dir: Path) -> None:
    os.mkfifo(config_dir / "password", 0o600)
    text = minimal.replace("[mqtt]\n", '[mqtt]\nusername = "dock-07"\n'
                           'password_file = "password"\n')
    refused(run_agent("--check-config", write_config(text)), "mqtt.password_file:", "FIFO")


def sim_config(minimal: str, root: Path, state_dir: Path) -> str:
    return minimal.replace('[dock]\nid = "dock-07"\n', f'[dock]\nid = "dock-07"\n'
                           f'state_dir = "{state_dir}"\nstore_dir = "{root}/store"\n'
                           f'runtime_dir = "{root}/run"\n')


def test_symlinked_state_dir_is_refused_and_its_target_untouched(minimal: str, write_config: Write,
                                                                 config_dir: Path) -> None:
    target = config_dir / "elsewhere"
    target.mkdir()
    target.chmod(0o755)
    link = config_dir / "state"
    link.symlink_to(target)
    path = write_config(sim_config(minimal, config_dir, link))
    refused(run_agent("--check-config", path), ":3: dock.state_dir:", "is a symlink")
    refused(run_agent("--config", path), "dock.state_dir:", "is a symlink")
    assert (target.stat().st_mode & 0o777) == 0o755


def test_start_up_refuses_a_state_dir_swapped_for_a_symlink(minimal: str, tmp_path: Path) -> None:
    """Between the config check and start-up the directory may change: the agent's own
    preparation never chmods through a symlink either."""
    from agent.app import StartupError, prepare_directories
    from agent.config import parse_settings

    settings = parse_settings(sim_config(minimal, tmp_path, tmp_path / "state"), check_files=False)
    target = tmp_path / "elsewhere"
    target.mkdir(0o755)
    target.chmod(0o755)
    (tmp_path / "state").symlink_to(target)
    with pytest.raises(StartupError, match="is a symlink"):
        prepare_directories(settings)
    assert (target.stat().st_mode & 0o777) == 0o755


def test_world_readable_signing_key_stops_start_up_with_exit_2(minimal: str, write_config: Write,
                                                               config_dir: Path) -> None:
    state = config_dir / "state"
    state.mkdir(0o700)
    (state / "dock.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (state / "dock.key").chmod(0o644)
    refused(run_agent("--config", write_config(sim_config(minimal, config_dir, state))),
            "cannot start", "signing key", "has mode 0644; it must be 0600")


@pytest.mark.parametrize(("dirs", "message"), [
    ('["DCIM", "DCIM/100MEDIA"]', '"DCIM/100MEDIA" lies inside footage directory "DCIM"'),
    ('["DCIM/100MEDIA", "DCIM"]', '"DCIM" contains footage directory "DCIM/100MEDIA"'),
    ('["DCIM", "./DCIM/"]', '"./DCIM/" repeats footage directory "DCIM"'),
    ('["VIDEO", "."]', '"." contains footage directory "VIDEO"'),
])
def test_overlapping_footage_dirs_are_refused(minimal: str, write_config: Write, dirs: str,
                                              message: str) -> None:
    path = write_config(minimal + f"\n[offload]\nfootage_dirs = {dirs}\n")
    refused(run_agent("--check-config", path),
            f"{path}:16: offload.footage_dirs[1]: {message}")


def test_separate_footage_dirs_are_accepted(minimal: str, write_config: Write) -> None:
    path = write_config(minimal + '\n[offload]\nfootage_dirs = ["DCIM", "DCIMX", "A/B", "A/C"]\n')
    proc = run_agent("--check-config", path)
    assert proc.returncode == 0, proc.stderr


def test_fifo_holiday_list_is_refused(minimal: str, write_config: Write,
                                      config_dir: Path) -> None:
    os.mkfifo(config_dir / "holidays.txt", 0o600)
    text = minimal + ('\n[deadline]\nhours = "none"\nworking_days = 2\n'
                      'holiday_file = "holidays.txt"\n')
    refused(run_agent("--check-config", write_config(text)),
            "holidays.txt: deadline.holiday_file: cannot read date list: is a FIFO")
