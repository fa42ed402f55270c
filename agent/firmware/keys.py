"""Trusted firmware signing keys from the config: PEM files of raw Ed25519 public keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.firmware.errors import KeyFileError
from agent.inputfiles import InputFileError, read_input_file
from firmware_bridge.fwpackage import PackageError, keyring, load_public_key

MAX_KEY_BYTES = 4096


def load_key(path: Path) -> Ed25519PublicKey:
    try:
        data = read_input_file(path, "firmware signing key", max_bytes=MAX_KEY_BYTES)
        return load_public_key(data)
    except InputFileError as exc:
        raise KeyFileError(str(exc)) from None
    except PackageError as exc:
        raise KeyFileError(f"firmware signing key {path}: {exc}") from None


def load_trusted_keys(paths: Iterable[Path]) -> Mapping[str, Ed25519PublicKey]:
    """key id -> key, for `fwpackage.verify_signature`."""
    return keyring(load_key(p) for p in paths)
