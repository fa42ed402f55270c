"""The generated files (`scripts/gen-config`) and the package's public names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import agent.config
from agent.config.generated import (
    EXAMPLE_CONFIG,
    README_FILE,
    SCHEMA_FILE,
    UDEV_RULES_FILE,
    GeneratedFileError,
    generated_files,
    stale_files,
)
from agent.devices.udev_rules import udev_rules

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The generated files and their inputs, copied into a scratch checkout."""
    for rel in (EXAMPLE_CONFIG, README_FILE, SCHEMA_FILE, UDEV_RULES_FILE):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    return tmp_path


def test_stale_files_are_named_and_rewritten(checkout: Path) -> None:
    assert stale_files(checkout, write=False) == []
    (checkout / SCHEMA_FILE).write_text("{}\n")
    (checkout / UDEV_RULES_FILE).unlink()
    readme = checkout / README_FILE
    readme.write_text(readme.read_text().replace("| `dock.id` |", "| `dock.name` |"))
    expected = sorted(Path(p) for p in (README_FILE, SCHEMA_FILE, UDEV_RULES_FILE))
    assert sorted(stale_files(checkout, write=False)) == expected
    assert (checkout / SCHEMA_FILE).read_text() == "{}\n"  # a check writes nothing
    assert sorted(stale_files(checkout, write=True)) == expected
    assert stale_files(checkout, write=False) == []
    assert (checkout / SCHEMA_FILE).read_bytes() == (REPO / SCHEMA_FILE).read_bytes()
    assert readme.read_bytes() == (REPO / README_FILE).read_bytes()


def test_readme_without_markers_is_an_error(checkout: Path) -> None:
    (checkout / README_FILE).write_text("# dock-agent\n")
    with pytest.raises(GeneratedFileError, match="config-reference markers"):
        generated_files(checkout)


def test_udev_rules_of_the_example_config(checkout: Path) -> None:
    rules = generated_files(checkout)[checkout / UDEV_RULES_FILE]
    assert rules.startswith("# dock-agent: recorders allowed by the example "
                            "/etc/dock-agent/dock-agent.toml")
    assert 'GOTO="dock_agent_recorder"' in rules and rules.endswith('LABEL="dock_agent_end"\n')


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in agent.config.__all__:
        assert getattr(agent.config, name) is not None, name
    assert agent.config.udev_rules is udev_rules
