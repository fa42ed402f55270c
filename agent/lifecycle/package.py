"""Export packages on a target directory: write, then re-read and verify.

Layout of a package folder (its name says dock, export id and date):

    files/<stored path>            the exported files, bit for bit
    extraction-statement.json      the written statement (regulation 004 §16), canonical JSON
    extraction-statement.sig       its raw 64-byte Ed25519 signature by the dock's key
    dock-signing-key.pem           the dock's public key (trust it only if it matches the
                                   key the records office holds for this dock)
    ascmhl/                        ASC MHL v2 history (SHA-1) over everything above

The package is built under a hidden `.partial-` name and renamed into place only after
every byte has been re-read from the target and checked; so a folder with the final name
is complete, and anything else is not. Signature check with standard tools:

    openssl pkeyutl -verify -pubin -inkey dock-signing-key.pem -rawin \\
        -in extraction-statement.json -sigfile extraction-statement.sig

(`dockctl verify-export PACKAGE --key <dock key .pub>` checks signature and every hash.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent import __version__
from agent.lifecycle import mhl
from agent.lifecycle.errors import ExportFailed
from agent.longjobs import StopSignal, check, pause
from agent.store.canonical import canonical_bytes, loads
from agent.store.durable import fsync_dir

STATEMENT = "extraction-statement.json"
SIGNATURE = "extraction-statement.sig"
PUBLIC_KEY = "dock-signing-key.pem"
FILES_DIR = "files"
STATEMENT_TYPE = "dock-agent/extraction-statement"
CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One stored file to export: where it is and what the ledger says it is."""

    path: Path
    relpath: str  # path inside the package, below files/
    size: int
    blake3_hex: str
    facts: Mapping[str, Any]  # maker (recorder, officer, unit), times, ledger references


@dataclass(frozen=True)
class Throttle:
    """At most `bytes_per_s` of reading (0: unlimited); sleeps the worker thread only.
    With the agent's `stop` (agent.longjobs): JobStopped at the next chunk once it is set."""

    bytes_per_s: float = 0.0
    stop: StopSignal | None = None

    def pace(self, started: float, done: int) -> None:
        check(self.stop)
        if self.bytes_per_s > 0:
            pause(self.stop, done / self.bytes_per_s - (time.monotonic() - started))


def _write_small(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _makedirs_below(root: Path, rel: PurePosixPath) -> None:
    """Create `root/rel` one level at a time, never `root` itself: if the target vanished
    (a disk pulled out), this fails instead of re-creating its mount point on the dock."""
    path = root
    for part in rel.parts:
        path = path / part
        with contextlib.suppress(FileExistsError):
            path.mkdir()


def _copy_one(src: SourceFile, work: Path, rel: str, throttle: Throttle) -> str:
    """Copy, hashing what was read (BLAKE3 must match the record) and returning SHA-1."""
    dest = work / rel
    _makedirs_below(work, PurePosixPath(rel).parent)
    b3, s1 = blake3(), hashlib.sha1()  # noqa: S324 - ASC MHL hash type, not for security
    done, started = 0, time.monotonic()
    with open(src.path, "rb") as fin, open(dest, "xb") as fout:
        while chunk := fin.read(CHUNK):
            b3.update(chunk)
            s1.update(chunk)
            fout.write(chunk)
            done += len(chunk)
            throttle.pace(started, done)
        fout.flush()
        os.fsync(fout.fileno())
        with contextlib.suppress(OSError):  # next read comes from the medium, not the cache
            os.posix_fadvise(fout.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if done != src.size or b3.hexdigest() != src.blake3_hex:
        raise ExportFailed(f"stored file {src.relpath} does not match its recorded hash:"
                           " not exported (run dockctl verify --deep)")
    return s1.hexdigest()


def hash_file(path: Path, stop: StopSignal | None = None) -> tuple[int, str, str]:
    """(size, BLAKE3 hex, SHA-1 hex) of a file, read from the start; JobStopped at the next
    chunk once the agent's `stop` is set."""
    b3, s1 = blake3(), hashlib.sha1()  # noqa: S324
    size = 0
    with open(path, "rb") as fh:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := fh.read(CHUNK):
            check(stop)
            b3.update(chunk)
            s1.update(chunk)
            size += len(chunk)
    return size, b3.hexdigest(), s1.hexdigest()


def write_package(work: Path, files: Sequence[SourceFile], statement: Mapping[str, Any],
                  key: Ed25519PrivateKey, *, throttle: Throttle = Throttle(),
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Write a complete package into `work` (which must not exist); return its facts."""
    work.mkdir()
    entries: list[mhl.MhlEntry] = []
    listed = []
    for i, src in enumerate(files):
        rel = f"{FILES_DIR}/{src.relpath}"
        sha1 = _copy_one(src, work, rel, throttle)
        entries.append(mhl.MhlEntry(rel, src.size, sha1))
        listed.append({"path": rel, "size": src.size, "blake3": src.blake3_hex, "sha1": sha1,
                       **src.facts})
        if progress is not None:
            progress(i + 1)
    body = canonical_bytes({**statement, "type": STATEMENT_TYPE, "v": 1, "files": listed})
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    for name, data in ((STATEMENT, body), (SIGNATURE, key.sign(body)), (PUBLIC_KEY, pub)):
        _write_small(work / name, data)
        entries.append(mhl.MhlEntry(name, len(data),
                                    hashlib.sha1(data).hexdigest()))  # noqa: S324
    moment = dt.datetime.now(dt.UTC)
    history = work / mhl.HISTORY_DIR
    history.mkdir()
    gen_name = mhl.generation_name(work.name.removeprefix(".partial-"), moment)
    gen = mhl.hashlist_xml(entries, moment=moment, hostname=socket.gethostname(),
                           tool_version=__version__)
    _write_small(history / gen_name, gen)
    _write_small(history / mhl.CHAIN_FILE, mhl.chain_xml([(gen_name, gen)]))
    for d in sorted({p.parent for p in work.rglob("*")} | {work}, key=lambda p: -len(p.parts)):
        fsync_dir(d)
    return {"statement_blake3": blake3(body).hexdigest(), "mhl": gen_name,
            "mhl_c4": mhl.c4_id(gen), "files": len(files)}


@dataclass(frozen=True)
class PackageCheck:
    ok: bool
    problems: tuple[str, ...]
    statement: Mapping[str, Any] | None


def verify_package(root: Path, public_key: Ed25519PublicKey | None = None, *,
                   stop: StopSignal | None = None) -> PackageCheck:
    """Re-read a package: signature, every file against statement (BLAKE3, SHA-1, size) and
    ASC MHL manifest, and nothing missing or added. `public_key`: the key to trust (default:
    the one in the package, which proves integrity but not origin). With the agent's `stop`:
    JobStopped at the next chunk, no verdict."""
    problems: list[str] = []
    try:
        body = (root / STATEMENT).read_bytes()
        sig = (root / SIGNATURE).read_bytes()
        pem = (root / PUBLIC_KEY).read_bytes()
    except OSError as exc:
        return PackageCheck(False, (f"cannot read the statement: {exc}",), None)
    if public_key is None:
        loaded = serialization.load_pem_public_key(pem)
        if not isinstance(loaded, Ed25519PublicKey):
            return PackageCheck(False, ("the package key is not an Ed25519 key",), None)
        public_key = loaded
    try:
        public_key.verify(sig, body)
    except InvalidSignature:
        problems.append("the statement's signature does not verify")
    statement = loads(body.decode("utf-8", "replace"))
    if not isinstance(statement, dict) or statement.get("type") != STATEMENT_TYPE:
        return PackageCheck(False, (*problems, "not an extraction statement"), None)
    try:
        chain = (root / mhl.HISTORY_DIR / mhl.CHAIN_FILE).read_bytes()
        gens = sorted((root / mhl.HISTORY_DIR).glob("*.mhl"))
        manifest = mhl.parse_hashlist(gens[0].read_bytes()) if gens else {}
    except (OSError, ValueError) as exc:
        return PackageCheck(False, (*problems, f"cannot read the ASC MHL history: {exc}"),
                            statement)
    if not gens or mhl.c4_id(gens[0].read_bytes()) not in chain.decode("utf-8", "replace"):
        problems.append("the ASC MHL chain does not match its generation file")
    want: dict[str, _Expected] = {}
    for f in statement.get("files", []):
        want[str(f.get("path"))] = (int(f.get("size", -1)), str(f.get("blake3")),
                                    str(f.get("sha1")))
    for name, data in ((STATEMENT, body), (SIGNATURE, sig), (PUBLIC_KEY, pem)):
        want[name] = (len(data), None, hashlib.sha1(data).hexdigest())  # noqa: S324
    problems += _check_files(root, want, manifest, stop)
    return PackageCheck(not problems, tuple(problems), statement)


_Expected = tuple[int, str | None, str]  # size, BLAKE3 (None: not recorded), SHA-1


def _check_files(root: Path, want: Mapping[str, _Expected],
                 manifest: Mapping[str, tuple[int, str]],
                 stop: StopSignal | None) -> list[str]:
    """Every expected file present, listed in the manifest and unchanged; nothing added."""
    problems: list[str] = []
    present = {PurePosixPath(p.relative_to(root)).as_posix() for p in root.rglob("*")
               if p.is_file() and p.relative_to(root).parts[0] != mhl.HISTORY_DIR}
    for extra in sorted(present - set(want)):
        problems.append(f"{extra}: not listed in the statement")
    for rel, (size, b3, sha1) in sorted(want.items()):
        if manifest.get(rel) != (size, sha1):
            problems.append(f"{rel}: the ASC MHL manifest does not list it as recorded")
        if rel not in present:
            problems.append(f"{rel}: missing")
            continue
        try:
            got_size, got_b3, got_sha1 = hash_file(root / rel, stop)
        except OSError as exc:
            problems.append(f"{rel}: cannot read: {exc}")
            continue
        if got_size != size or got_sha1 != sha1 or (b3 is not None and got_b3 != b3):
            problems.append(f"{rel}: content differs from the recorded hash")
    return problems
