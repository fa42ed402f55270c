"""The example config, JSON Schema, README reference and udev rules match the model."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from agent.config import (
    SECTION_HELP,
    ConfigInvalid,
    KeyLines,
    iter_fields,
    json_schema,
    load_settings,
    parse_settings,
)
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "dock-agent.example.toml"
COMMENTED_KEY = re.compile(r'^# ((?:"[^"]*"|[A-Za-z0-9_]+) = .*)$')


def uncommented_example() -> str:
    """The example with every commented-out `# key = value` line made active."""
    return "\n".join(COMMENTED_KEY.sub(r"\1", line) for line in EXAMPLE.read_text().splitlines())


def leaf_keys() -> list[str]:
    return [key.replace("[]", "[0]") for key, _, _ in iter_fields()]


def test_example_loads() -> None:
    s = load_settings(EXAMPLE, check_files=False)
    assert s.dock.id == "dock-01" and s.devices.source == "udev"


def test_example_loads_with_its_input_files(tmp_path: Path) -> None:
    secret = tmp_path / "fleet.secret"
    secret.write_text("x" * 32)
    secret.chmod(0o600)
    s = load_settings(EXAMPLE, overrides=[f'recorder.fleet_secret_file="{secret}"'])
    assert s.recorder.fleet_secret_file == secret


def test_every_setting_is_in_the_example_with_a_comment_above() -> None:
    text = uncommented_example()
    lines = KeyLines(text)
    source = text.splitlines()
    for key in leaf_keys():
        line = lines.find(key)
        assert line is not None, f"{key} is not in the example"
        found = source[line - 1].strip()
        table_path = key.replace("[0]", "")
        assert found.split("=")[0].strip().strip('"') == key.split(".")[-1] or found in (
            f"[{table_path}]", f"[[{table_path}]]"), key
        above = EXAMPLE.read_text().splitlines()[line - 2]
        assert above.startswith("#") and not COMMENTED_KEY.match(above), f"{key}: no comment"


def test_commented_example_values_are_valid() -> None:
    """Uncommenting every line yields a valid file except for the either/or pairs."""
    with pytest.raises(ConfigInvalid) as info:
        parse_settings(uncommented_example(), base_dir=EXAMPLE.parent, check_files=False)
    assert {i.key for i in info.value.issues} == {"deadline", "readiness"}


def test_committed_schema_equals_generated() -> None:
    committed = json.loads((REPO / "config" / "dock-agent.schema.json").read_text())
    assert committed == json_schema()


def test_schema_accepts_the_example_and_rejects_bad_values() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    doc = tomllib.loads(uncommented_example())
    assert list(validator.iter_errors(doc)) == []
    doc["offload"]["buffer_mib"] = 100
    doc["offload"]["colour"] = "red"
    doc["deadline"]["hours"] = "never"
    messages = sorted(e.message for e in validator.iter_errors(doc))
    assert len(messages) == 3, messages
    del doc["dock"]
    assert any("'dock' is a required property" in e.message for e in validator.iter_errors(doc))


def test_schema_and_loader_agree_on_types_and_ranges() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    for bad in ("offload.buffer_mib=65", "mqtt.port=0", 'logging.level="loud"',
                "offload.wipe_after_offload=1", 'mqtt.protocol=5'):
        doc = tomllib.loads(uncommented_example())
        section, _, rest = bad.partition(".")
        key, _, value = rest.partition("=")
        doc[section][key] = tomllib.loads(f"v = {value}")["v"]
        assert list(validator.iter_errors(doc)), bad
        with pytest.raises(ConfigInvalid):
            load_settings(EXAMPLE, overrides=[bad], check_files=False)


def test_every_section_has_help() -> None:
    assert set(SECTION_HELP) == {f.name for f in dataclasses.fields(Settings)}
    for key, f, _ in iter_fields():
        assert f.metadata.get("help"), key


def test_generated_files_are_up_to_date() -> None:
    """README reference table, schema and udev rules: run scripts/gen-config to refresh."""
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-config"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    readme = (REPO / "README.md").read_text()
    for key in leaf_keys():
        assert f"`{key.replace('[0]', '[]')}`" in readme, key


def test_demo_config_and_scenario_are_valid(tmp_path: Path) -> None:
    from hw_sim.scenario import load_scenario

    # scripts/demo gives the agent a private copy of the secret (a checkout has it 0644)
    secret = tmp_path / "fleet.secret"
    secret.write_bytes((REPO / "config" / "demo-fleet.secret").read_bytes())
    secret.chmod(0o600)
    demo = load_settings(REPO / "config" / "dock-agent.demo.toml",
                         overrides=[f'recorder.fleet_secret_file="{secret}"'])
    assert demo.devices.source == "sim" and demo.mount.method == "directory"
    assert not demo.mqtt.tls and demo.dock.state_dir == REPO / "demo-state" / "state"
    scenario = load_scenario(REPO / "config" / "demo-scenario.toml")
    assert len(scenario.recorders) == 5 and scenario.timeline
