"""The [firmware] section through the real `dock-agent --check-config`: what the firmware
service would refuse at start (a shift-start window, a target version, a signing key file)
and a target the config's own allowlists refuse are exit-2 errors with file:line: key, so
`--check-config` (and the demo, which runs it first) catches them before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from firmware_bridge.fwpackage import public_key_pem
from hw_sim.fwkeys import sim_vendor_key

from .test_config_input_files import refused, run_agent

Write = Callable[[str], Path]


def test_what_the_firmware_service_refuses_is_found_by_the_check(
        minimal: str, write_config: Write, config_dir: Path) -> None:
    path = write_config(minimal + f"""
[firmware]
shift_start_windows = ["06:30-07:30", "25:00-26:00"]
targets = {{ "BWC-4" = "2.1.x" }}
trusted_keys = ["{config_dir / 'missing.pem'}"]
""")
    proc = run_agent("--check-config", path)
    refused(proc, "(3 problems)",
            ":16: firmware.shift_start_windows[1]: shift-start window '25:00-26:00'",
            ":17: firmware.targets.BWC-4: target '2.1.x' is not a dotted decimal version",
            ":18: firmware.trusted_keys[0]:", "missing.pem")
    refused(run_agent("--config", path), "firmware.targets.BWC-4")  # nor does it start


@pytest.mark.parametrize(("readiness", "problem"), [
    ('allowed_firmware = ["2.0.0"]', "firmware '2.1.0' not allowed"),
    ('firmware_allowlist = { "BWC-4" = ["2.0.0"] }', "is not on the allowlist (2.0.0)"),
    # the model's own list decides for it, over the flat one
    ('allowed_firmware = ["2.1"]\nfirmware_allowlist = { "BWC-4" = ["2.0"] }',
     "is not on the allowlist (2.0)"),
    ('allowed_firmware = ["2.0.0"]\nfirmware_allowlist = { "BWC-4" = ["2.1"] }', None),
    ('allowed_firmware = ["2.0", "2.1"]', None),
    ("", None),
])
def test_a_target_its_own_allowlists_refuse_is_an_error(
        minimal: str, write_config: Write, config_dir: Path, readiness: str,
        problem: str | None) -> None:
    key = config_dir / "vendor.pem"
    key.write_bytes(public_key_pem(sim_vendor_key().public_key()))
    path = write_config(minimal + f"""
[readiness]
{readiness}

[firmware]
targets = {{ "BWC-4" = "2.1.0" }}
trusted_keys = ["{key}"]
""")
    proc = run_agent("--check-config", path)
    if problem is None:
        assert proc.returncode == 0 and ": OK: " in proc.stdout, proc.stderr
        return
    line = next(n for n, text in enumerate(path.read_text().splitlines(), start=1)
                if text.startswith("targets ="))
    refused(proc, f":{line}: firmware.targets.BWC-4: ", problem,
            "would never be updated to it")


BAD_VERSIONS = ["1.2.x", "", "01.2", " 1.2", "1.2\\n", "1.\\u00012", "1.2.3.4.5", "v1.2"]


def test_allowlist_versions_that_are_not_dotted_decimals_are_errors(
        minimal: str, write_config: Write) -> None:
    """Every allowlist entry, flat or per model, is a dotted decimal version: anything
    else would match no recorder. Each is named with its file:line: key, by
    --check-config and at start; control characters are shown escaped."""
    flat = ", ".join(f'"{v}"' for v in BAD_VERSIONS)
    path = write_config(minimal + f"""
[readiness]
allowed_firmware = ["1.0", {flat}]

[readiness.firmware_allowlist]
"BWC-4" = ["2.0.0", "2.1.x"]
"BWC-5" = ["3.0", "3.1 "]
""")
    lines = {text.split("=")[0].strip().strip('"'): n for n, text in
             enumerate(path.read_text().splitlines(), start=1) if "=" in text}
    proc = run_agent("--check-config", path)
    needles = [f":{lines['allowed_firmware']}: readiness.allowed_firmware[{i}]: allowlist"
               for i in range(1, len(BAD_VERSIONS) + 1)]
    refused(proc, f"({len(BAD_VERSIONS) + 2} problems)", *needles,
            f":{lines['BWC-4']}: readiness.firmware_allowlist.BWC-4[1]: allowlist version"
            " '2.1.x' is not a dotted decimal version",
            f":{lines['BWC-5']}: readiness.firmware_allowlist.BWC-5[1]: allowlist version"
            " '3.1 ' is not", "'1.\\x012'", "'1.2\\n'")
    assert "\x01" not in proc.stderr
    refused(run_agent("--config", path), "readiness.allowed_firmware[1]")  # nor does it start


def test_allowlist_versions_in_every_documented_form_are_accepted(
        minimal: str, write_config: Write) -> None:
    path = write_config(minimal + """
[readiness]
allowed_firmware = ["1", "1.4", "1.4.2", "0.0.0.7", "123456789.0"]
firmware_allowlist = { "BWC-4" = ["2.1.0", "10.20"] }
""")
    proc = run_agent("--check-config", path)
    assert proc.returncode == 0 and ": OK: " in proc.stdout, proc.stderr
