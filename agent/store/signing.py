"""The dock's Ed25519 checkpoint key: creation, loading and checkpoint signatures.

The private key lives in a PEM (PKCS#8) file of mode 0600, created on first start and
written atomically (temporary file, fsync, rename, fsync of the directory) so a power cut
never leaves a half-written key. The public key is also written beside it as `<key>.pub`
(SubjectPublicKeyInfo PEM) so auditors can verify checkpoints without the private key.
A key file readable by group or others is refused: a leaked key could forge checkpoints.

A checkpoint signs the canonical JSON (see `agent.store.canonical`) of
`{"type": "dock-agent/ledger-checkpoint", "v": 1, "dock_id", "seq", "hash", "time_us"}`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.inputfiles import MAX_SECRET_BYTES, InputFileError, read_input_file
from agent.store.chain import checkpoint_message
from agent.store.errors import SigningError


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex of the raw 32-byte public key; how keys are named in the database."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def public_key_from_id(kid: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(kid))
    except ValueError as exc:
        raise SigningError(f"not an Ed25519 public key: {kid!r}") from exc


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the dock key, or create it (mode 0600, atomically) if the file does not exist."""
    if path.exists():
        key = _load_private(path)
        pub = public_key_path(path)
        if not pub.exists():
            _write_atomic(pub, _public_pem(key.public_key()), 0o644)
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)
    _write_atomic(public_key_path(path), _public_pem(key.public_key()), 0o644)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key from a `.pub` PEM file, or derived from a private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read key file {path}: {exc}") from exc
    try:
        if b"PRIVATE KEY" in data:
            return _load_private(path).public_key()
        loaded = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SigningError(f"{path} is not a PEM Ed25519 key: {exc}") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise SigningError(f"{path} holds a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


class CheckpointSigner:
    """Signs ledger checkpoints with the dock's private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path) -> CheckpointSigner:
        return cls(load_or_create_key(path))

    def sign(self, dock_id: str, seq: int, entry_hash: str, time_us: int) -> str:
        """Hex Ed25519 signature over the checkpoint message."""
        return self._key.sign(checkpoint_message(dock_id, seq, entry_hash, time_us)).hex()

    @staticmethod
    def verify(public_key: Ed25519PublicKey, dock_id: str, seq: int, entry_hash: str,
               time_us: int, signature_hex: str) -> bool:
        try:
            sig = bytes.fromhex(signature_hex)
            public_key.verify(sig, checkpoint_message(dock_id, seq, entry_hash, time_us))
        except (ValueError, InvalidSignature):
            return False
        return True


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:  # a regular, private file: never a FIFO, a device or readable by others
        data = read_input_file(path, "signing key", max_bytes=MAX_SECRET_BYTES, secret=True,
                               group_ok=False)  # the agent's own key: 0600, nothing else
    except InputFileError as exc:
        raise SigningError(str(exc)) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {path} is unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path} is a {type(key).__name__}, not Ed25519")
    return key


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SigningError(f"cannot write key file {path}: {exc}") from exc
