"""Semantic checks: rules across fields and sections, and the input files the operator
provides (fleet secret, holiday lists, TLS material, MQTT password, S3 credentials).

Directories and keys the agent creates itself (state, store, runtime, signing key,
sockets) are checked at start-up, except what would make that unsafe (a symlinked
directory, a signing key others can read).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.compliance.day_lists import read_day_list
from agent.config.convert import Converter, Problem
from agent.config.typenames import UNSET, short
from agent.devices.errors import DeviceConfigError
from agent.devices.usb_ports import BayMap
from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, read_input_file
from agent.settings import (
    DeadlineSettings,
    DeviceSettings,
    DockSettings,
    FirmwareSettings,
    MqttSettings,
    ReadinessSettings,
    UploadSettings,
)

FLEET_SECRET_MIN_BYTES = 16  # after stripping surrounding white space, as the agent reads it

# Pairs of alternative settings: giving only the second unsets the first.
ALTERNATIVES: tuple[tuple[str, str, str], ...] = (
    ("deadline", "hours", "working_days"),
    ("readiness", "min_free_gb", "min_free_hours"),
)


def needs_fleet_secret(devices: DeviceSettings) -> bool:
    """Recorders with a serial control port authenticate with the fleet secret."""
    if devices.source == "sim":
        return True
    return any(not d.storage_only for d in devices.allow)


def apply_alternatives(sections: dict[str, Any], raw: Mapping[str, Any]) -> None:
    """Unset the first of two alternative settings where only the second was given."""
    for section, first, second in ALTERNATIVES:
        obj = sections.get(section)
        given = raw.get(section, {})
        if obj is None or not isinstance(given, dict):
            continue
        if given.get(second, UNSET) != UNSET and first not in given:
            sections[section] = dataclasses.replace(obj, **{first: None})


def _check_readable_file(
    conv: Converter, key: str, path: Path, what: str, *, min_bytes: int = 1,
    secret: bool = False,
) -> None:
    """A regular file (never a FIFO or device), not empty; a secret also private."""
    try:
        data = read_input_file(path, what, max_bytes=MAX_SECRET_BYTES, secret=secret).strip()
    except InputFileError as exc:
        conv.error(key, str(exc))
        return
    if not data:
        conv.error(key, f"{what} {path} is empty")
    elif len(data) < min_bytes:
        conv.error(key, f"{what} {path} is shorter than {min_bytes} bytes")


def _check_devices(conv: Converter, devices: DeviceSettings, check_files: bool) -> None:
    for i, d in enumerate(devices.allow):
        if d.storage_only and not devices.allow_storage_only:
            conv.error(f"devices.allow[{i}].storage_only", "storage-only recorders are "
                       "refused while devices.allow_storage_only = false")
    if not devices.allow:
        # an empty allowlist refuses every recorder, from udev and dock-sim alike: the dock
        # would sit there docking nothing, so the config is wrong, not merely unusual
        hint = ("; dock-sim's recorders are vid \"1209\", pid \"d0c5\" unless their spec"
                " says otherwise" if devices.source == "sim" else "")
        conv.error("devices.allow", "no recorders are allowed: add at least one "
                   f"[[devices.allow]] entry (vid, pid{hint})")
    seen: dict[str, str] = {}
    for port, label in devices.bays.items():
        if not port or not label.strip():
            conv.error(f"devices.bays.{port}", "port path and bay label must be non-empty")
            continue
        try:
            BayMap({port: label})  # the device source's own parser of port keys
        except DeviceConfigError as exc:
            conv.error(f"devices.bays.{port}", str(exc))
            continue
        if label in seen:
            conv.error(f"devices.bays.{port}",
                       f'bay label "{label}" is already used for port "{seen[label]}"')
        else:
            seen[label] = port


def _check_deadline(conv: Converter, deadline: DeadlineSettings, check_files: bool) -> None:
    if (deadline.hours is None) == (deadline.working_days is None):
        conv.error("deadline", "set exactly one of hours and working_days "
                   '(write hours = "none" to use working_days)')
    for name in ("holiday_file", "workday_file"):
        path = getattr(deadline, name)
        if path is None:
            continue
        if deadline.working_days is None:
            conv.error(f"deadline.{name}", "only meaningful with deadline.working_days")
        if check_files:
            for p in read_day_list(path).problems:
                conv.problems.append(Problem(f"deadline.{name}", p.message, str(path), p.line))


def _check_readiness(conv: Converter, readiness: ReadinessSettings, check_files: bool) -> None:
    if (readiness.min_free_gb is None) == (readiness.min_free_hours is None):
        conv.error("readiness", "set exactly one of min_free_gb and min_free_hours "
                   '(write min_free_gb = "none" to use min_free_hours)')
    _check_versions(conv, "readiness.allowed_firmware", readiness.allowed_firmware)
    for model, versions in readiness.firmware_allowlist.items():
        _check_versions(conv, f"readiness.firmware_allowlist.{model}", versions)


def _check_versions(conv: Converter, key: str, versions: Sequence[str]) -> None:
    """Allowlist entries are dotted decimals, as firmware reports and packages name them:
    an entry like "1.2.x" or " 1.2" would match no recorder and silently refuse them all."""
    from agent.firmware import policy
    from agent.firmware.errors import FirmwareError

    for i, version in enumerate(versions):
        try:
            policy.check_version(version, "allowlist version")
        except FirmwareError as exc:
            conv.error(f"{key}[{i}]", str(exc))


def _check_mqtt(conv: Converter, mqtt: MqttSettings, check_files: bool) -> None:
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        conv.error("mqtt.cert_file", "cert_file and key_file go together")
    if mqtt.password_file is not None and mqtt.username is None:
        conv.error("mqtt.password_file", "a password needs mqtt.username")
    if not (mqtt.enabled and check_files):
        return
    files = [("password_file", "password file", True)]
    if mqtt.tls:
        files += [("ca_file", "CA certificate", False), ("cert_file", "client certificate", False),
                  ("key_file", "client key", True)]
    for name, what, secret in files:
        path = getattr(mqtt, name)
        if path is not None:
            _check_readable_file(conv, f"mqtt.{name}", path, what, secret=secret)


def _check_upload(conv: Converter, upload: UploadSettings, check_files: bool) -> None:
    if not upload.enabled:
        return
    if not re.fullmatch(r"https?://[^/\s]+/?", upload.endpoint):
        conv.error("upload.endpoint", "must be http(s)://host[:port]")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", upload.bucket):
        conv.error("upload.bucket", "must be a valid bucket name (3-63 of a-z 0-9 . -)")
    if upload.prefix.startswith("/") or "//" in upload.prefix or ".." in upload.prefix:
        conv.error("upload.prefix", "must be relative, without '//' or '..'")
    if check_files:
        from agent.upload.credentials import load_credentials
        from agent.upload.errors import CredentialsError

        try:
            load_credentials(upload.credentials_file)
        except CredentialsError as exc:
            conv.error("upload.credentials_file", str(exc))
        if upload.ca_file is not None:
            _check_readable_file(conv, "upload.ca_file", upload.ca_file, "CA certificate")


def _check_firmware(conv: Converter, firmware: FirmwareSettings, check_files: bool) -> None:
    """What the firmware service would refuse at start, found here with its key and line."""
    from agent.firmware import policy
    from agent.firmware.errors import FirmwareError

    for i, window in enumerate(firmware.shift_start_windows):
        try:
            policy.parse_window(window)
        except FirmwareError as exc:
            conv.error(f"firmware.shift_start_windows[{i}]", str(exc))
    for model, version in firmware.targets.items():
        try:
            policy.check_version(version, "target")
        except FirmwareError as exc:
            conv.error(f"firmware.targets.{model}", str(exc))
    if check_files:
        from agent.firmware.keys import load_key  # the crypto stack: only when reading keys

        for i, path in enumerate(firmware.trusted_keys):
            try:
                load_key(path)
            except FirmwareError as exc:
                conv.error(f"firmware.trusted_keys[{i}]", str(exc))


def _check_firmware_targets(conv: Converter, firmware: FirmwareSettings,
                            readiness: ReadinessSettings) -> None:
    """A target the config's own allowlists refuse would never be installed (the update
    decision asks the same rule as readiness): the config contradicts itself."""
    from agent.compliance.firmware import firmware_problem

    for model, version in firmware.targets.items():
        problem = firmware_problem(readiness, model, version)
        if problem is not None:
            conv.error(f"firmware.targets.{model}", f"{problem}: recorders of this model"
                       " would never be updated to it (allow it in [readiness] too)")


def _check_footage_overlap(conv: Converter, dirs: Sequence[str]) -> None:
    """Each recorder file must be reached through one footage directory only: a nested
    or repeated directory would offload (and later wipe) the same file twice."""
    parts = [Path(os.path.normpath(d)).parts for d in dirs]
    parts = [() if p == (".",) else p for p in parts]
    for j, later in enumerate(parts):
        for i in range(j):
            earlier = parts[i]
            n = min(len(earlier), len(later))
            if earlier[:n] != later[:n]:
                continue
            if earlier == later:
                how = "repeats"
            elif len(earlier) < len(later):
                how = "lies inside"
            else:
                how = "contains"
            conv.error(f"offload.footage_dirs[{j}]",
                       f"{short(dirs[j])} {how} footage directory {short(dirs[i])} "
                       f"(footage_dirs[{i}]); footage directories must not overlap")


def _check_dock_paths(conv: Converter, dock: DockSettings, check_files: bool) -> None:
    """Directories the agent creates and chmods must not be symlinks (the mode would land
    on the target); an explicit signing key that exists must be private."""
    if not check_files:
        return
    for name in ("state_dir", "store_dir", "runtime_dir"):
        path: Path = getattr(dock, name)
        if path.is_symlink():
            conv.error(f"dock.{name}", f"{path} is a symlink; give the real directory")
        elif path.exists() and not path.is_dir():
            conv.error(f"dock.{name}", f"{path} exists and is not a directory")
    if dock.key_file is not None and dock.key_file.exists():
        try:
            read_input_file(dock.key_file, "signing key", max_bytes=MAX_SECRET_BYTES,
                            secret=True, group_ok=False)
        except InputFileError as exc:
            conv.error("dock.key_file", str(exc))


# Rules within one section, in the order their issues are reported.
_SECTION_CHECKS: tuple[tuple[str, Callable[[Converter, Any, bool], None]], ...] = (
    ("devices", _check_devices),
    ("deadline", _check_deadline),
    ("readiness", _check_readiness),
    ("mqtt", _check_mqtt),
    ("upload", _check_upload),
    ("firmware", _check_firmware),
)


def _check_across_sections(conv: Converter, sections: Mapping[str, Any],
                           check_files: bool) -> None:
    devices: DeviceSettings | None = sections.get("devices")
    retention = sections.get("retention")
    upload = sections.get("upload")
    if retention is not None and upload is not None and retention.purge and not upload.enabled:
        conv.error("retention.purge", "purging needs [upload] enabled: only footage the "
                   "object store has acknowledged may leave the dock")
    offload = sections.get("offload")
    if offload is not None and not offload.footage_dirs:
        conv.error("offload.footage_dirs", "at least one footage directory is needed")
    if offload is not None:
        _check_footage_overlap(conv, offload.footage_dirs)
    dock = sections.get("dock")
    if dock is not None:
        _check_dock_paths(conv, dock, check_files)
    mount = sections.get("mount")
    if mount is not None and devices is not None and mount.method == "directory" \
            and devices.source == "udev":
        conv.error("mount.method", 'udev recorders present block devices; "directory" '
                   'works only with devices.source = "sim"')
    firmware, readiness = sections.get("firmware"), sections.get("readiness")
    if firmware is not None and readiness is not None:
        _check_firmware_targets(conv, firmware, readiness)
    recorder = sections.get("recorder")
    if recorder is not None and devices is not None and check_files \
            and needs_fleet_secret(devices):
        _check_readable_file(conv, "recorder.fleet_secret_file", recorder.fleet_secret_file,
                             "fleet secret", min_bytes=FLEET_SECRET_MIN_BYTES, secret=True)


def check_sections(conv: Converter, sections: Mapping[str, Any], check_files: bool) -> None:
    """Rules across fields and sections, for the sections that were built; with
    `check_files`, also the input files they name."""
    for name, check in _SECTION_CHECKS:
        if name in sections:
            check(conv, sections[name], check_files)
    _check_across_sections(conv, sections, check_files)
