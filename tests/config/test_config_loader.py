"""The config loader against real files: valid configs, every kind of error, line numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import (
    ConfigInvalid,
    ConfigIssue,
    load_config,
    load_settings,
    parse_settings,
    read_date_file,
    summary,
)

Write = Callable[[str], Path]
REPO = Path(__file__).resolve().parents[2]
MINIMAL = ""


@pytest.fixture(autouse=True)
def _minimal(minimal: str) -> None:
    global MINIMAL
    MINIMAL = minimal


def issues_of(path: Path, **kwargs: object) -> list[ConfigIssue]:
    with pytest.raises(ConfigInvalid) as info:
        load_settings(path, **kwargs)  # type: ignore[arg-type]
    return list(info.value.issues)


def keyed(issues: list[ConfigIssue]) -> dict[str, ConfigIssue]:
    return {i.key: i for i in issues}


def test_minimal_config_loads_with_defaults(write_config: Write, config_dir: Path) -> None:
    s = load_settings(write_config(MINIMAL))
    assert s.dock.id == "dock-07"
    assert s.devices.allow[0].vid == "1d6b"
    assert s.recorder.fleet_secret_file == config_dir / "fleet.secret"  # relative to the file
    assert s.offload.buffer_mib == 4 and s.deadline.hours == 24.0
    assert s.mqtt.port == 1883 and s.mqtt.tls is False
    assert isinstance(s.devices.storage_wait_s, float)
    assert "dock dock-07" in summary(s) and "deadline 24 h" in summary(s)


def test_unknown_key_names_file_key_line_and_suggestion(write_config: Write) -> None:
    path = write_config(MINIMAL + "\n[offload]\nbufer_mib = 4\n")
    (issue,) = issues_of(path)
    assert issue.file == str(path)
    assert issue.key == "offload.bufer_mib"
    assert issue.line == 16
    assert 'did you mean "buffer_mib"' in issue.message
    assert str(issue).startswith(f"{path}:16: offload.bufer_mib: unknown key")


def test_unknown_section(write_config: Write) -> None:
    (issue,) = issues_of(write_config(MINIMAL + "\n[ofload]\nbuffer_mib = 4\n"))
    assert issue.key == "ofload" and issue.line == 15 and "unknown section" in issue.message


@pytest.mark.parametrize(
    ("snippet", "key", "needle"),
    [
        ("[offload]\nbuffer_mib = 100", "offload.buffer_mib", "out of range (allowed 1..64)"),
        ("[offload]\nbuffer_mib = 0", "offload.buffer_mib", "out of range"),
        ("[offload]\nbuffer_mib = 4.5", "offload.buffer_mib", "expected integer, got float"),
        ("[offload]\nbuffer_mib = \"4\"", "offload.buffer_mib", "expected integer, got string"),
        ("[offload]\nverify_sample_rate = 1.5", "offload.verify_sample_rate", "out of range"),
        ("[offload]\nverify_sample_rate = nan", "offload.verify_sample_rate", "finite"),
        ("[offload]\nverify = \"never\"", "offload.verify", 'one of "always"'),
        ("[offload]\nwipe_after_offload = 1", "offload.wipe_after_offload", "expected boolean"),
        ("[offload]\nfootage_dirs = \"DCIM\"", "offload.footage_dirs", "expected array"),
        ("[offload]\nfootage_dirs = [\"DCIM\", 3]", "offload.footage_dirs[1]", "expected string"),
        ("[offload]\nfootage_dirs = [\"/DCIM\"]", "offload.footage_dirs[0]", "relative"),
        ("[offload]\nfootage_dirs = [\"../x\"]", "offload.footage_dirs[0]", "relative"),
        ("[offload]\nfootage_dirs = []", "offload.footage_dirs", "at least one"),
        ("[health]\ninterval_s = true", "health.interval_s", "expected number, got boolean"),
        ("[logging]\nlevel = \"INFO\"", "logging.level", 'one of "debug"'),
        ("[devices]\nsource = \"usb\"", "devices.source", 'one of "udev", "sim"'),
        ("[devices]\nbays = [\"A\"]", "devices.bays", "expected table"),
        ("[devices]\nbays = { 1-1 = 3 }", "devices.bays.1-1", "expected string"),
        ("[devices]\nbays = { 1-1 = \"A\", 1-2 = \"A\" }", "devices.bays.1-2", "already used"),
        ("[devices]\nbays = { p1 = \"A\" }", "devices.bays.p1", "neither a udev ID_PATH"),
        ("[clock]\nassume_synchronised = \"yes\"", "clock.assume_synchronised", "boolean"),
        ("[control]\nmetrics_port = 0", "control.metrics_port", "out of range"),
        ("[control]\nmetrics_port = \"off\"", "control.metrics_port",
         'expected integer or "none", got string "off"'),
        ("[mqtt]\ntopic_prefix = \"dock/#\"", "mqtt.topic_prefix", "+ or #"),
        ("[mqtt]\nbackoff_min_s = 10.0\nbackoff_max_s = 5.0", "mqtt.backoff_min_s", "exceed"),
        ("[mqtt]\nprotocol = 5", "mqtt.protocol", 'one of "5", "3.1.1", got integer 5'),
        ("[mqtt]\ncert_file = \"c.pem\"", "mqtt.cert_file", "go together"),
        ("[mqtt]\npassword_file = \"pw\"", "mqtt.password_file", "needs mqtt.username"),
        ("[mount]\nmethod = \"directory\"", "mount.method", "only with devices.source"),
        ("[readiness]\nmin_free_hours = 4.0\nmin_free_gb = 8.0", "readiness", "exactly one"),
        ("[readiness]\nmin_free_gb = \"none\"", "readiness", "exactly one"),
    ],
)
def test_invalid_values(write_config: Write, snippet: str, key: str, needle: str) -> None:
    text = MINIMAL.replace("[mqtt]\n", "[mqtt_]\n") if snippet.startswith("[mqtt]") else MINIMAL
    if snippet.startswith("[mqtt]"):
        text = text.replace("[mqtt_]\ntls = false\nport = 1883\n", "")
        snippet += "\ntls = false"
    if snippet.startswith("[devices]"):
        text = text.replace("[[devices.allow]]", "[[devices.allow]]", 1)
        text = snippet + "\n" + text  # [devices] before its [[devices.allow]] array
    else:
        text = text + "\n" + snippet + "\n"
    path = write_config(text)
    matching = [i for i in issues_of(path) if i.key == key and needle in i.message]
    assert matching, issues_of(path)
    # the line points at the key (or its table) in the file
    assert matching[0].line is not None
    line = path.read_text().splitlines()[matching[0].line - 1]
    assert key.split(".")[-1].split("[")[0] in line or line.startswith("[")


def test_missing_required_keys(write_config: Write) -> None:
    path = write_config('[dock]\ntimezone = "UTC"\n\n[[devices.allow]]\nvid = "1d6b"\n')
    issues = keyed(issues_of(path, check_files=False))
    assert issues["dock.id"].message == "required key is missing"
    assert issues["dock.id"].line == 1  # the [dock] table
    assert issues["devices.allow[0].pid"].line == 4  # the [[devices.allow]] entry


def test_missing_dock_section_reports_dock_id(write_config: Write) -> None:
    issues = keyed(issues_of(write_config('[[devices.allow]]\nvid = "1d6b"\npid = "0001"\n'),
                             check_files=False))
    assert issues["dock.id"].line is None


def test_all_errors_reported_at_once_sorted_by_line(write_config: Write) -> None:
    path = write_config(
        '[dock]\nid = "bad id/1"\ntimezone = "Mars/Olympus"\n'
        "[devices]\ndebounce_ms = -5\n"
        '[[devices.allow]]\nvid = "1d6b"\npid = "0104"\n'
        '[[devices.allow]]\nvid = "12G4"\npid = 104\nserial_pattern = "["\n'
        "[offload]\nbuffers = 1\n"
        '[mqtt]\nport = 70000\ntls = "yes"\n'
    )
    issues = issues_of(path, check_files=False)
    got = [(i.line, i.key) for i in issues]
    assert got == [
        (2, "dock.id"),
        (3, "dock.timezone"),
        (5, "devices.debounce_ms"),
        (10, "devices.allow[1].vid"),
        (11, "devices.allow[1].pid"),
        (12, "devices.allow[1].serial_pattern"),
        (14, "offload.buffers"),
        (16, "mqtt.port"),
        (17, "mqtt.tls"),
    ]
    assert "Mars/Olympus" in issues[1].message
    assert "4 hex digits" in issues[3].message


def test_inline_array_of_tables_falls_back_to_the_array_line(write_config: Write) -> None:
    path = write_config(
        '[dock]\nid = "d"\n[devices]\nallow = [\n  { vid = "1d6b", pid = "0104" },\n'
        '  { vid = "xx", pid = "0104" },\n]\n'
    )
    (issue,) = issues_of(path, check_files=False)
    assert (issue.key, issue.line) == ("devices.allow[1].vid", 4)


def test_multiline_strings_and_arrays_do_not_confuse_line_numbers(write_config: Write) -> None:
    path = write_config(
        '[dock]\nid = "d"\n[offload]\nfootage_dirs = [\n  "DCIM",\n  "x = 1",\n]\n'
        '[readiness]\nallowed_firmware = ["""a\nbuffers = 3\n"""]\n'
        "[offload2]\n"
    )
    issues = keyed(issues_of(path, check_files=False))
    assert issues["offload2"].line == 12


def test_toml_syntax_error_has_line(write_config: Write) -> None:
    path = write_config('[dock]\nid = "d"\n\n[offload]\nbuffer_mib = = 4\n')
    (issue,) = issues_of(path)
    assert issue.line == 5 and "TOML syntax error" in issue.message
    assert str(issue).startswith(f"{path}:5: TOML syntax error")


def test_duplicate_key_is_a_syntax_error(write_config: Write) -> None:
    (issue,) = issues_of(write_config('[dock]\nid = "a"\nid = "b"\n'))
    assert issue.line == 3


def test_unreadable_config_files(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path / "absent.toml")
    assert "cannot read config file" in issue.message and "No such file" in issue.message
    (issue,) = issues_of(tmp_path)  # a directory
    assert "cannot read config file" in issue.message
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[dock]\nid = "caf\xe9"\n')
    (issue,) = issues_of(bad)
    assert issue.line == 2 and "UTF-8" in issue.message


def test_config_without_read_permission(write_config: Write, minimal: str) -> None:
    if os.geteuid() != 0:
        path = write_config(minimal)
        path.chmod(0)
        (issue,) = issues_of(path)
        assert "Permission denied" in issue.message
        return
    # root reads any file: check as the unprivileged user `nobody`, with the system Python
    # (the config tools need only the standard library)
    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs setpriv and /usr/bin/python3 to drop root")
    base = Path(tempfile.mkdtemp(prefix="dock-agent-perm-"))  # pytest's tmp is root-only
    try:
        base.chmod(0o755)
        shutil.copytree(REPO / "agent", base / "agent")
        config = base / "dock-agent.toml"
        config.write_text(minimal)
        config.chmod(0o600)
        run = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                              python, "-m", "agent.cli", "--check-config", str(config)],
                             capture_output=True, text=True, cwd=base, env={"PATH": "/usr/bin"})
    finally:
        shutil.rmtree(base)
    assert run.returncode == 2, run.stderr
    assert f"{config}: cannot read config file: Permission denied" in run.stderr


def test_none_unsets_optional_settings(write_config: Write) -> None:
    s = load_settings(write_config(
        MINIMAL + '\n[deadline]\nhours = "none"\nworking_days = 2\n'
        '\n[control]\nmetrics_port = "none"\n'
    ))
    assert s.deadline.hours is None and s.deadline.working_days == 2
    assert s.control.metrics_port is None


def test_setting_only_the_alternative_unsets_the_default(write_config: Write) -> None:
    s = load_settings(write_config(MINIMAL + "\n[deadline]\nworking_days = 2\n"
                                   "\n[readiness]\nmin_free_hours = 3\n"))
    assert s.deadline.hours is None and s.deadline.working_days == 2
    assert s.readiness.min_free_gb is None and s.readiness.min_free_hours == 3.0
    assert "deadline 2 working days" in summary(s)


def test_unsetting_the_alternative_keeps_the_default(write_config: Write) -> None:
    s = load_settings(write_config(MINIMAL + '\n[deadline]\nworking_days = "none"\n'))
    assert s.deadline.hours == 24.0 and s.deadline.working_days is None


def test_both_alternatives_is_an_error(write_config: Write) -> None:
    path = write_config(MINIMAL + "\n[deadline]\nhours = 24\nworking_days = 2\n")
    (issue,) = issues_of(path)
    assert issue.key == "deadline" and issue.line == 15 and "exactly one" in issue.message
    (issue,) = issues_of(write_config(MINIMAL + '\n[deadline]\nhours = "none"\n'))
    assert issue.key == "deadline"


def test_holiday_file_errors_name_its_lines(write_config: Write, config_dir: Path) -> None:
    (config_dir / "holidays.txt").write_text(
        "# national holidays\n2026-10-01\n\n2026-10-02  # second day\n2026-13-01\n1 Oct\n"
    )
    path = write_config(MINIMAL + '\n[deadline]\nworking_days = 2\nholiday_file = "holidays.txt"\n')
    issues = issues_of(path)
    holidays = str(config_dir / "holidays.txt")
    assert [(i.file, i.line, i.key) for i in issues] == [
        (holidays, 5, "deadline.holiday_file"),
        (holidays, 6, "deadline.holiday_file"),
    ]
    assert "not a valid date" in issues[0].message and "YYYY-MM-DD" in issues[1].message


def test_date_file_reader(config_dir: Path) -> None:
    good = config_dir / "days.txt"
    good.write_text("2026-10-01\n# c\n2026-10-02 # x\n")
    assert {d.isoformat() for d in read_date_file(good)} == {"2026-10-01", "2026-10-02"}
    with pytest.raises(ConfigInvalid) as info:
        read_date_file(config_dir / "nope.txt")
    assert "cannot read date list" in str(info.value)


def test_missing_holiday_file_and_holidays_without_working_days(write_config: Write) -> None:
    path = write_config(MINIMAL + '\n[deadline]\nholiday_file = "absent.txt"\n')
    issues = issues_of(path)
    assert any("only meaningful with deadline.working_days" in i.message for i in issues)
    assert any("No such file" in i.message and i.file.endswith("absent.txt") for i in issues)


def test_fleet_secret_checked_only_when_serial_recorders_exist(write_config: Write,
                                                               config_dir: Path) -> None:
    (config_dir / "fleet.secret").unlink()
    (issue,) = issues_of(write_config(MINIMAL))
    assert issue.key == "recorder.fleet_secret_file" and issue.line == 9
    storage_only = MINIMAL.replace('pid = "0104"\n', 'pid = "0104"\nstorage_only = true\n')
    storage_only = storage_only.replace(
        "[dock]\n", "[devices]\nallow_storage_only = true\n[dock]\n")
    assert load_settings(write_config(storage_only)).devices.allow[0].storage_only
    (config_dir / "fleet.secret").write_text("short\n")
    (config_dir / "fleet.secret").chmod(0o600)
    (issue,) = issues_of(write_config(MINIMAL))
    assert "shorter than 16 bytes" in issue.message


def test_storage_only_entry_needs_allow_storage_only(write_config: Write) -> None:
    text = MINIMAL.replace('pid = "0104"\n', 'pid = "0104"\nstorage_only = true\n')
    (issue,) = issues_of(write_config(text))
    assert issue.key == "devices.allow[0].storage_only" and issue.line == 7


def test_udev_source_needs_an_allowlist(write_config: Write) -> None:
    (issue,) = issues_of(write_config('[dock]\nid = "d"\n'), check_files=False)
    assert issue.key == "devices.allow" and "no recorders are allowed" in issue.message


def test_sim_source_needs_an_allowlist_too(write_config: Write) -> None:
    """dock-sim's recorders meet the same allowlist: an empty one would refuse them all."""
    text = '[dock]\nid = "d"\n\n[devices]\nsource = "sim"\n'
    (issue,) = issues_of(write_config(text), check_files=False)
    assert (issue.key, issue.line) == ("devices.allow", 4), issue
    assert "no recorders are allowed" in issue.message and '"d0c5"' in issue.message


def test_tls_files_checked_when_tls_is_on(write_config: Write, config_dir: Path) -> None:
    text = MINIMAL.replace("tls = false\nport = 1883\n",
                           'ca_file = "ca.pem"\ncert_file = "c.pem"\nkey_file = "k.pem"\n')
    issues = keyed(issues_of(write_config(text)))
    assert set(issues) == {"mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file"}
    assert issues["mqtt.ca_file"].line == 12
    for name in ("ca.pem", "c.pem", "k.pem"):
        (config_dir / name).write_text("-----BEGIN-----\n")
    (config_dir / "k.pem").chmod(0o600)
    assert load_settings(write_config(text)).mqtt.ca_file == config_dir / "ca.pem"
    # no checks when MQTT is off
    (config_dir / "ca.pem").unlink()
    assert not load_settings(write_config(text + "enabled = false\n")).mqtt.enabled


def test_check_files_false_skips_input_files(write_config: Write, config_dir: Path) -> None:
    (config_dir / "fleet.secret").unlink()
    assert load_config(write_config(MINIMAL)).dock.id == "dock-07"


def test_absolute_paths_stay_absolute(write_config: Write) -> None:
    s = load_settings(write_config(MINIMAL + '\n[control]\nsocket = "/run/x/c.sock"\n'))
    assert s.control.socket == Path("/run/x/c.sock")
    assert s.dock.state_dir == Path("/var/lib/dock-agent")  # defaults are untouched


def test_overrides(write_config: Write) -> None:
    path = write_config(MINIMAL)
    s = load_settings(path, overrides=["mqtt.port=1884", "logging.format=text",
                                       'dock.id="dock-99"', "offload.footage_dirs=[\"A\",\"B\"]"])
    assert s.mqtt.port == 1884 and s.logging.format == "text" and s.dock.id == "dock-99"
    assert s.offload.footage_dirs == ["A", "B"]
    (issue,) = issues_of(path, overrides=["mqtt.port=0"])
    assert issue.file == "--set" and issue.key == "mqtt.port"
    (issue,) = issues_of(path, overrides=['offload.footage_dirs=["/abs"]'])
    assert issue.file == "--set" and issue.key == "offload.footage_dirs[0]"
    (issue,) = issues_of(path, overrides=["port=1"])
    assert "section.key=VALUE" in issue.message


def test_parse_settings_without_file(tmp_path: Path) -> None:
    text = ('[dock]\nid = "x"\n[devices]\nsource = "sim"\n[[devices.allow]]\nvid = "1209"\n'
            'pid = "d0c5"\n[mount]\nmethod = "directory"\n')
    s = parse_settings(text, base_dir=tmp_path, check_files=False)
    assert s.devices.source == "sim" and [(d.vid, d.pid) for d in s.devices.allow] == [
        ("1209", "d0c5")]


@pytest.mark.parametrize(("pattern", "needle"), [
    ("(unclosed", "invalid regular expression"),
    ("^[A-Z0-9]+_(?P<officer_no>[0-9]+)_", "group named `officer`"),
])
def test_officer_in_name_pattern_is_checked(write_config: Write, pattern: str,
                                            needle: str) -> None:
    text = MINIMAL.replace('fleet_secret_file = "fleet.secret"\n',
                           f"fleet_secret_file = \"fleet.secret\"\nofficer_in_name = '{pattern}'\n")
    issues = keyed(issues_of(write_config(text), check_files=False))
    assert needle in issues["recorder.officer_in_name"].message


def test_officer_in_name_may_be_off(write_config: Write) -> None:
    text = MINIMAL.replace('fleet_secret_file = "fleet.secret"\n',
                           "fleet_secret_file = \"fleet.secret\"\nofficer_in_name = ''\n")
    assert load_settings(write_config(text), check_files=False).recorder.officer_in_name == ""
