"""Load and validate the TOML configuration against the settings model in `agent.settings`.

The loader is generic: it walks the dataclass fields and their type hints, so a new
setting needs no loader code. Every problem (syntax, unknown key, wrong type, range,
missing key, cross-field rule, unreadable input file) becomes a `ConfigIssue` naming the
file, the dotted key and the line; all issues are reported together in one
`ConfigInvalid`, and no `Settings` object exists unless the whole file is valid.

Conventions an operator relies on (documented in the README):
- An optional setting (`X | None`) is unset by omitting it or by writing the string "none".
- Of two alternative settings (deadline hours / working_days, readiness min_free_gb /
  min_free_hours) setting only the second one unsets the first.
- Relative paths are relative to the directory of the config file.
- Input files the operator provides (fleet secret, holiday lists, TLS material, MQTT
  password) are checked here, at config time; directories and keys the agent creates
  itself (state, store, runtime, signing key, sockets) are checked at start-up.

The modules, in the order a file goes through them:
- `load`: read the file, apply `--set` overrides, run the steps below, place the issues;
- `positions`: line numbers of keys in the TOML source;
- `convert`: TOML values into the settings dataclasses (types, ranges, unknown keys),
  with `field_checks` for single values and `typenames` for how types read;
- `rules`: rules across fields and sections, and the input files the operator provides;
- generation from the same model, so the outputs cannot drift from it: `schema` (JSON
  Schema), `reference` (the README table), `generated` (the files `scripts/gen-config`
  keeps in step). The udev rules are made by `agent.devices.udev_rules`.
"""

from __future__ import annotations

from agent.config.errors import ConfigError, ConfigInvalid, ConfigIssue
from agent.config.field_checks import FIELD_CHECKS
from agent.config.fields import SECTION_HELP, iter_fields
from agent.config.load import (
    DEFAULT_CONFIG_PATH,
    load_config,
    load_settings,
    parse_overrides,
    parse_settings,
    read_date_file,
    summary,
)
from agent.config.positions import KeyLines
from agent.config.reference import reference_markdown
from agent.config.rules import ALTERNATIVES, FLEET_SECRET_MIN_BYTES, needs_fleet_secret
from agent.config.schema import json_schema
from agent.config.typenames import UNSET, describe_type
from agent.devices.udev_rules import udev_rules

__all__ = [
    "ALTERNATIVES",
    "DEFAULT_CONFIG_PATH",
    "FIELD_CHECKS",
    "FLEET_SECRET_MIN_BYTES",
    "SECTION_HELP",
    "UNSET",
    "ConfigError",
    "ConfigInvalid",
    "ConfigIssue",
    "KeyLines",
    "describe_type",
    "iter_fields",
    "json_schema",
    "load_config",
    "load_settings",
    "needs_fleet_secret",
    "parse_overrides",
    "parse_settings",
    "read_date_file",
    "reference_markdown",
    "summary",
    "udev_rules",
]
