"""Staging a firmware package: verify it, keep a read-only copy, index and ledger it.

A package is verified on entry (header, Ed25519 signature against the configured keys,
manifest sanity, image size and BLAKE3), copied into `<state_dir>/firmware/` through a
temporary file (fsync, re-verified from the copy, chmod 0444, rename, fsync dir) and only
then indexed in SQLite with its `firmware_staged` ledger entry in the same transaction. A
crash leaves at most an unindexed copy, which the next staging of it replaces.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.compliance.versions import version_key
from agent.firmware import store
from agent.firmware.errors import StagingError
from agent.firmware.policy import PackageFacts
from agent.store.durable import fsync_dir
from agent.store.ledger import EntryKind, Ledger, current_us
from firmware_bridge.fwpackage import (
    Manifest,
    PackageError,
    PackageHeader,
    read_header,
    verify_image,
    verify_signature,
)

COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class VerifiedPackage:
    header: PackageHeader
    file: str  # name of the read-only copy in the firmware directory

    @property
    def manifest(self) -> Manifest:
        return self.header.manifest


def facts_of(m: Manifest) -> PackageFacts:
    return PackageFacts(blake3=m.blake3, version=m.version, models=tuple(m.models),
                        min_from=m.min_from, max_from=m.max_from, size=m.size)


def check_manifest(m: Manifest, known_models: frozenset[str]) -> None:
    """Refusals beyond the codec's: a package this dock could never sensibly install."""
    if known_models and not known_models.intersection(m.models):
        raise StagingError(f"package is for model(s) {', '.join(m.models)}, none of this"
                           f" fleet's ({', '.join(sorted(known_models))})")
    v = version_key(m.version)
    for name, bound in (("min_from", m.min_from), ("max_from", m.max_from)):
        if bound is not None and version_key(bound) is None:
            raise StagingError(f"package {name} {bound!r} is not a version")
    low = version_key(m.min_from) if m.min_from else None
    if v is not None and low is not None and v < low:
        raise StagingError(f"package version {m.version} is below its own minimum previous"
                           f" version {m.min_from}: a downgrade below min_from is refused")
    high = version_key(m.max_from) if m.max_from else None
    if low is not None and high is not None and high < low:
        raise StagingError(f"package max_from {m.max_from} is below its min_from {m.min_from}")


def verify_open(f: BinaryIO, keys: Mapping[str, Ed25519PublicKey],
                known_models: frozenset[str]) -> PackageHeader:
    try:
        header = read_header(f)
        verify_signature(header, keys)
        check_manifest(header.manifest, known_models)
        verify_image(header, f)
    except PackageError as exc:
        raise StagingError(str(exc)) from exc
    return header


def verify_and_copy(source: Path, firmware_dir: Path, keys: Mapping[str, Ed25519PublicKey],
                    known_models: frozenset[str]) -> VerifiedPackage:
    """Blocking (run in a worker thread): the verified read-only copy of `source`."""
    if not keys:
        raise StagingError("no trusted firmware keys configured ([firmware] trusted_keys)")
    try:
        with source.open("rb") as f:
            if not f.seekable() or not source.is_file():
                raise StagingError(f"{source} is not a regular file")
            header = verify_open(f, keys, known_models)
            name = f"{header.manifest.blake3}.dfw"
            firmware_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = firmware_dir / f".{name}.tmp"
            f.seek(0)
            _copy(f, tmp)
    except FileNotFoundError as exc:
        raise StagingError(f"cannot read {source}: no such file for the agent (it runs with a"
                           " private /tmp and without /home: put the package where the"
                           " service can read it, e.g. a USB stick under /media)") from exc
    except OSError as exc:
        raise StagingError(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        _verify_copy(tmp, header, keys, known_models, source)
        tmp.chmod(0o444)
        tmp.replace(firmware_dir / name)
        fsync_dir(firmware_dir)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return VerifiedPackage(header, name)


def _verify_copy(tmp: Path, header: PackageHeader, keys: Mapping[str, Ed25519PublicKey],
                 known_models: frozenset[str], source: Path) -> None:
    """The copy is what will be sent: verify it, not (only) the source."""
    with tmp.open("rb") as copy:
        again = verify_open(copy, keys, known_models)
    if again.manifest_bytes != header.manifest_bytes:
        raise StagingError(f"{source} changed while it was staged")


def _copy(src: BinaryIO, dst: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while block := src.read(COPY_BLOCK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def record_staged(conn: sqlite3.Connection, ledger: Ledger, pkg: VerifiedPackage,
                  source: str) -> tuple[store.StagedPackage, bool]:
    """Index the package (transaction of the caller); (package, newly staged)."""
    store.ensure_schema(conn)
    m = pkg.manifest
    existing = store.get_package(conn, m.blake3)
    if existing is not None:
        return existing, False
    data: dict[str, object] = {
        "blake3": m.blake3, "version": m.version, "vendor": m.vendor, "models": list(m.models),
        "min_from": m.min_from, "max_from": m.max_from, "size": m.size, "key_id": m.key_id,
        "created": m.created, "source": source,
    }
    entry = ledger.append(conn, EntryKind.FIRMWARE_STAGED, data=data)
    staged = store.StagedPackage(facts=facts_of(m), vendor=m.vendor, key_id=m.key_id,
                                 created=m.created, file=pkg.file, source=source,
                                 staged_us=current_us(), ledger_seq=entry.seq)
    store.insert_package(conn, staged)
    return staged, True
