"""Trusted firmware signing keys from the config: PEM files of raw Ed25519 public keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from firmware_bridge.fwpackage import key_id

from agent.firmware.errors import KeyFileError
from agent.inputfiles import InputFileError, read_input_file

MAX_KEY_BYTES = 4096


def load_key(path: Path) -> Ed25519PublicKey:
    try:
        pem = read_input_file(path, "firmware signing key", max_bytes=MAX_KEY_BYTES)
    except InputFileError as exc:
        raise KeyFileError(str(exc)) from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyFileError(f"firmware signing key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"firmware signing key {path}: not an Ed25519 key")
    return key


def load_trusted_keys(paths: Iterable[Path]) -> Mapping[str, Ed25519PublicKey]:
    """key id -> key, for `fwpackage.verify_signature`."""
    return {key_id(k): k for k in (load_key(p) for p in paths)}
