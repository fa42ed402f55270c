"""Settings that contradict each other (agent.config.relations): each broken relation is a
`file:line: key` issue, exit 2 at `--check-config` and at the agent's start; the line is
one the operator wrote, even when the other side of the relation is left at its default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cli import EXIT_CONFIG, EXIT_OK, main
from agent.config import reference_markdown
from agent.config.relations import RELATIONS

from .conftest import MINIMAL

Write = Callable[[str], Path]

UPLOAD = ('\n[upload]\nenabled = true\nendpoint = "http://127.0.0.1:9000"\nbucket = "footage"\n'
          'credentials_file = "s3.credentials"\n')
PURGE = UPLOAD + "\n[retention]\npurge = true\n"

# (relation broken, text before MINIMAL, text after it (MINIMAL ends inside [mqtt]),
#  the key the issue must name)
CASES: list[tuple[str, str, str, str]] = [
    ("devices.debounce_ms", "[devices]\ndebounce_ms = 5000\n\n", "", "devices.debounce_ms"),
    ("devices.debounce_ms", "[devices]\nunplug_grace_s = 1.0\n\n", "",
     "devices.unplug_grace_s"),  # the debounce left at its default (1500 ms)
    ("audit.interval_s", "", "\n[audit]\ninterval_s = 7200\ncycle_days = 0.01\n",
     "audit.interval_s"),
    ("retention.purge_after_days", "", "\n[retention]\npurge_after_days = 3.0\n",
     "retention.purge_after_days"),
    ("retention.target_free_percent", "", "\n[retention]\ntarget_free_percent = 10.0\n",
     "retention.target_free_percent"),
    ("health.store_free_warn_percent", "",
     PURGE + "\n[health]\nstore_free_warn_percent = 20.0\n", "health.store_free_warn_percent"),
    ("retention.require_central_ack", "",
     "enabled = false\n" + PURGE + "require_central_ack = true\n",
     "retention.require_central_ack"),
    ("upload.while_offloading_mib_s", "", "\n[upload]\nbandwidth_mib_s = 1.0\n",
     "upload.bandwidth_mib_s"),  # while_offloading_mib_s left at its default (2.0)
    ("screen.lights", "", "\n[screen]\nlights = true\n", "screen.lights"),
    ("mqtt.backoff_min_s", "", "backoff_min_s = 10.0\nbackoff_max_s = 5.0\n",
     "mqtt.backoff_min_s"),
    ("upload.backoff_min_s", "", "\n[upload]\nbackoff_min_s = 700.0\n", "upload.backoff_min_s"),
]


@pytest.fixture
def write(write_config: Write, config_dir: Path) -> Write:
    creds = config_dir / "s3.credentials"
    creds.write_text("access_key = dock\nsecret_key = 0123456789abcdef\n")
    creds.chmod(0o600)
    return write_config


def line_of(text: str, key: str) -> int:
    leaf = key.rsplit(".", 1)[1]
    (line,) = [n for n, t in enumerate(text.splitlines(), 1) if t.startswith(f"{leaf} =")]
    return line


@pytest.mark.parametrize(("relation", "before", "after", "key"), CASES,
                         ids=[f"{c[0]}@{c[3]}" for c in CASES])
def test_a_broken_relation_is_refused_at_its_line(
        write: Write, capsys: pytest.CaptureFixture[str], relation: str, before: str,
        after: str, key: str) -> None:
    text = before + MINIMAL + after
    path = write(text)
    for args in (["--check-config", str(path)], ["--config", str(path)]):
        assert main(args) == EXIT_CONFIG
        err = capsys.readouterr().err
        issues = [line.strip() for line in err.splitlines() if f": {key}: " in line]
        assert len(issues) == 1 and issues[0].startswith(f"{path}:{line_of(text, key)}: "), err
        assert relation in issues[0] or key == relation, err
        assert "Traceback" not in err


def test_every_relation_is_tested_and_documented() -> None:
    assert {c[0] for c in CASES} == {r.key for r in RELATIONS}
    reference = reference_markdown()
    for r in RELATIONS:
        assert f"- `{r.key}` {r.rule}: otherwise {r.why}." in reference


@pytest.mark.parametrize("after", [
    "\n[devices]\ndebounce_ms = 2500\nunplug_grace_s = 3.0\n",
    "\n[audit]\ninterval_s = 86400\ncycle_days = 1\n",
    "\n[retention]\nmin_days_on_dock = 7\npurge_after_days = 7\n",
    "\n[upload]\nbandwidth_mib_s = 2.0\nwhile_offloading_mib_s = 2.0\n",
    PURGE + "require_central_ack = true\n\n[health]\nstore_free_warn_percent = 15.0\n",
    "\n[health]\nstore_free_warn_percent = 50.0\n",  # no purge: nothing to contradict
    "\n[audit]\nenabled = false\ninterval_s = 7200\ncycle_days = 0.01\n",
])
def test_relations_at_their_edge_hold(write: Write, capsys: pytest.CaptureFixture[str],
                                      after: str) -> None:
    text = MINIMAL + after
    if after.startswith("\n[devices]"):
        text = after.lstrip("\n") + "\n" + MINIMAL
    path = write(text)
    assert main(["--check-config", str(path)]) == EXIT_OK, capsys.readouterr().err


def test_the_configured_unplug_grace_reaches_every_session(write: Write) -> None:
    from typing import Any, cast

    from agent.app import _session_deps
    from agent.config import load_settings

    path = write("[devices]\ndebounce_ms = 4000\nunplug_grace_s = 6.5\n\n" + MINIMAL)
    settings = load_settings(path)
    none = cast(Any, None)
    deps = _session_deps(settings, none, none, none, b"secret", lambda: True, lambda: None,
                         none, firmware_readiness=lambda r: r)
    assert deps.unplug_grace_s == 6.5
