"""Fixtures for the config tests: real files in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "dock-agent.example.toml"

MINIMAL = """\
[dock]
id = "dock-07"

[[devices.allow]]
vid = "1d6b"
pid = "0104"

[recorder]
fleet_secret_file = "fleet.secret"

[mqtt]
tls = false
port = 1883
"""


@pytest.fixture
def minimal() -> str:
    """A small valid config (udev source, one allowed recorder, plain MQTT)."""
    return MINIMAL


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A directory with a valid fleet secret next to where configs are written."""
    (tmp_path / "fleet.secret").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "fleet.secret").chmod(0o600)
    return tmp_path


@pytest.fixture
def write_config(config_dir: Path) -> Callable[[str], Path]:
    """Write TOML text to dock-agent.toml in `config_dir` and return its path."""

    def write(text: str, name: str = "dock-agent.toml") -> Path:
        path = config_dir / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
