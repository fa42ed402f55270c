"""The dock's checkpoint key: created once (0600, atomically), reloaded, refused if exposed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.store.errors import SigningError
from agent.store.signing import (
    CheckpointSigner,
    key_id,
    load_or_create_key,
    load_public_key,
    public_key_path,
)


def test_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dock.key"
    old_umask = os.umask(0)  # a careless umask must not widen the mode
    try:
        key = load_or_create_key(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()
    again = load_or_create_key(path)
    assert key_id(again.public_key()) == key_id(key.public_key())
    assert sorted(p.name for p in path.parent.iterdir()) == ["dock.key", "dock.key.pub"]


def test_public_key_file_and_private_key_file_give_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    key = load_or_create_key(path)
    assert key_id(load_public_key(public_key_path(path))) == key_id(key.public_key())
    assert key_id(load_public_key(path)) == key_id(key.public_key())


def test_group_readable_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(SigningError, match="0640"):
        load_or_create_key(path)


def test_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dock.key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(SigningError, match="unreadable"):
        load_or_create_key(path)
    with pytest.raises(SigningError):
        load_public_key(tmp_path / "missing.pub")


def test_signatures_bind_every_field(tmp_path: Path) -> None:
    signer = CheckpointSigner.from_file(tmp_path / "k")
    h = "ab" * 32
    sig = signer.sign("dock-1", 10, h, 123)
    pub = signer.public_key
    assert CheckpointSigner.verify(pub, "dock-1", 10, h, 123, sig)
    assert not CheckpointSigner.verify(pub, "dock-2", 10, h, 123, sig)
    assert not CheckpointSigner.verify(pub, "dock-1", 11, h, 123, sig)
    assert not CheckpointSigner.verify(pub, "dock-1", 10, "cd" * 32, 123, sig)
    assert not CheckpointSigner.verify(pub, "dock-1", 10, h, 124, sig)
    assert not CheckpointSigner.verify(pub, "dock-1", 10, h, 123, "zz")
    other = CheckpointSigner.from_file(tmp_path / "k2")
    assert not CheckpointSigner.verify(other.public_key, "dock-1", 10, h, 123, sig)
