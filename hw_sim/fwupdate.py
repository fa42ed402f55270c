"""The virtual recorder's firmware-update side: trust, staging, durable offset, A/B slots.

Everything persists under ``<recorder dir>/firmware/`` so it survives unplug, `kill -9` of
the simulator and a restart:

- ``slots.json``: active slot, each slot's version, the slot to try on the next boot and the
  last update's result;
- ``staged.json`` + ``staged.bin``: the transfer in progress (manifest, signature and the
  *durable* offset). Received bytes are synced every ``sync_chunks`` chunks; on load the
  staged file is cut back to the durable offset, so bytes that were never synced are gone
  exactly as they would be on a real recorder losing power.

The recorder checks the manifest itself (signature against its own trusted keys, model,
min_from/max_from against the running version) and, at commit, the whole image's BLAKE3
and the signature again. A committed image is tried on the next boot; if it does not boot
or fails its self-test (fault injection), the previous slot runs and ``last_result`` says so.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from firmware_bridge.fwpackage import (
    BadSignature,
    Manifest,
    PackageError,
    UnknownKey,
    check_signature,
    keyring,
    parse_manifest,
)
from firmware_bridge.messages import (
    DIGEST_BYTES,
    FIRMWARE_CHUNK_MAX,
    ErrorCode,
    FirmwareBegin,
    FirmwareResult,
    FirmwareStatus,
)
from hw_sim.endpoint import DeviceFault
from hw_sim.fwkeys import parse_trusted_key
from hw_sim.spec import Faults, RecorderSpec

log = logging.getLogger(__name__)

_HASH_BLOCK = 1 << 20


@dataclass
class Slots:
    active: str = "A"
    versions: dict[str, str] = field(default_factory=lambda: {"A": "", "B": ""})
    pending: str | None = None  # slot to try on the next boot
    last_result: int = FirmwareResult.NONE

    @property
    def inactive(self) -> str:
        return "B" if self.active == "A" else "A"


@dataclass
class Transfer:
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    durable: int = 0  # synced to storage; survives power loss
    received: int = 0  # written, maybe not yet synced
    unsynced_chunks: int = 0


def _write_json(path: Path, value: object) -> None:
    """Atomic, durable replacement of a small JSON file."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        json.dump(value, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (9p, FUSE) cannot sync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class FirmwareUpdater:
    """The update side of RecorderHandler (firmware_status/begin/chunk/commit)."""

    def __init__(self, spec: RecorderSpec, recorder_dir: Path,
                 faults: Callable[[], Faults]) -> None:
        self.spec = spec
        self.dir = recorder_dir / "firmware"
        self._faults = faults
        self._keys = keyring(parse_trusted_key(k) for k in spec.firmware_keys)
        self.slots = Slots(versions={"A": spec.firmware, "B": ""})
        self.transfer: Transfer | None = None
        self.boots = 0

    @property
    def running_version(self) -> str:
        return self.slots.versions[self.slots.active]

    # --- power on --------------------------------------------------------------------------
    def power_on(self) -> None:
        """Load the persisted state and boot: try a pending slot, roll back if it fails."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._load_slots()
        self._load_transfer()
        self.boots += 1
        if self.slots.pending is not None:
            self._try_boot(self.slots.pending)

    def _try_boot(self, slot: str) -> None:
        mode = self._faults().firmware_boot
        self.slots.pending = None
        if mode == "no_boot":
            self.slots.last_result = FirmwareResult.ROLLED_BACK
        elif mode == "self_test":
            self.slots.last_result = FirmwareResult.SELF_TEST_FAILED
        else:
            self.slots.active = slot
            self.slots.last_result = FirmwareResult.OK
        log.info("recorder %s: booted slot %s (%s), result %s", self.spec.serial,
                 self.slots.active, self.running_version,
                 FirmwareResult(self.slots.last_result).name)
        self._save_slots()

    def _load_slots(self) -> None:
        try:
            d = json.loads((self.dir / "slots.json").read_text())
            self.slots = Slots(d["active"], dict(d["versions"]), d["pending"], d["last_result"])
        except (OSError, ValueError, KeyError, TypeError):
            self.slots = Slots(versions={"A": self.spec.firmware, "B": ""})

    def _save_slots(self) -> None:
        s = self.slots
        _write_json(self.dir / "slots.json", {"active": s.active, "versions": s.versions,
                                              "pending": s.pending,
                                              "last_result": int(s.last_result)})

    def _load_transfer(self) -> None:
        self.transfer = None
        try:
            d = json.loads((self.dir / "staged.json").read_text())
            manifest_bytes = bytes.fromhex(d["manifest"])
            t = Transfer(parse_manifest(manifest_bytes), manifest_bytes,
                         bytes.fromhex(d["signature"]), int(d["durable"]))
            with (self.dir / "staged.bin").open("r+b") as fh:  # unsynced bytes are lost
                fh.truncate(t.durable)
        except (OSError, ValueError, KeyError, TypeError, PackageError):
            self._discard_transfer()
            return
        t.received = t.durable
        self.transfer = t

    def _discard_transfer(self) -> None:
        self.transfer = None
        (self.dir / "staged.json").unlink(missing_ok=True)
        (self.dir / "staged.bin").unlink(missing_ok=True)

    # --- RecorderHandler -----------------------------------------------------------------
    def status(self) -> FirmwareStatus:
        s, t = self.slots, self.transfer
        digest = bytes.fromhex(t.manifest.blake3) if t else bytes(DIGEST_BYTES)
        return FirmwareStatus(self.running_version, s.active, s.versions["A"], s.versions["B"],
                              s.last_result, digest, t.durable if t else 0,
                              t.manifest.size if t else 0)

    def begin(self, manifest_bytes: bytes, signature: bytes) -> FirmwareBegin:
        manifest = self._check_offer(manifest_bytes, signature)
        t = self.transfer
        if t is not None and t.manifest == manifest:
            t.received, t.unsynced_chunks = t.durable, 0
            log.info("recorder %s: resuming firmware %s at %d", self.spec.serial,
                     manifest.version, t.durable)
            return FirmwareBegin(t.durable, FIRMWARE_CHUNK_MAX)
        self._discard_transfer()
        (self.dir / "staged.bin").write_bytes(b"")
        self.transfer = Transfer(manifest, manifest_bytes, signature)
        self._sync()
        return FirmwareBegin(0, FIRMWARE_CHUNK_MAX)

    def _check_offer(self, manifest_bytes: bytes, signature: bytes) -> Manifest:
        try:
            manifest = parse_manifest(manifest_bytes)
        except PackageError as exc:
            raise DeviceFault(ErrorCode.FIRMWARE_MANIFEST, str(exc)) from None
        self._check_signature(manifest, manifest_bytes, signature)
        if self.spec.model not in manifest.models:
            raise DeviceFault(ErrorCode.FIRMWARE_MODEL,
                              f"package is for {', '.join(manifest.models)}, not {self.spec.model}")
        if not manifest.accepts_from(self.running_version):
            raise DeviceFault(
                ErrorCode.FIRMWARE_VERSION,
                f"{manifest.version} installs from {manifest.min_from or 'any'}.."
                f"{manifest.max_from or 'any'}; running {self.running_version}")
        if manifest.size > self.spec.firmware_slot_bytes:
            raise DeviceFault(ErrorCode.FIRMWARE_MANIFEST,
                              f"image of {manifest.size} bytes exceeds the slot's "
                              f"{self.spec.firmware_slot_bytes}")
        return manifest

    def _check_signature(self, manifest: Manifest, manifest_bytes: bytes,
                         signature: bytes) -> None:
        try:
            check_signature(manifest, manifest_bytes, signature, self._keys)
        except (UnknownKey, BadSignature) as exc:
            raise DeviceFault(ErrorCode.FIRMWARE_SIGNATURE, str(exc)) from None

    def chunk(self, offset: int, crc32: int, data: bytes) -> int:
        t = self.transfer
        if t is None:
            raise DeviceFault(ErrorCode.FIRMWARE_NO_TRANSFER, "no firmware transfer begun")
        if not t.durable <= offset <= t.received or offset + len(data) > t.manifest.size:
            t.received, t.unsynced_chunks = t.durable, 0
            raise DeviceFault(ErrorCode.FIRMWARE_OFFSET,
                              f"chunk at {offset}+{len(data)}: continue at {t.durable}", t.durable)
        if zlib.crc32(data) != crc32:
            raise DeviceFault(ErrorCode.FIRMWARE_CRC, f"chunk at {offset}: CRC-32 differs",
                              t.durable)
        with (self.dir / "staged.bin").open("r+b") as fh:
            fh.seek(offset)
            fh.write(data)
            t.received = offset + len(data)
            t.unsynced_chunks += 1
            if t.unsynced_chunks >= self.spec.firmware_sync_chunks or \
                    t.received == t.manifest.size:
                fh.flush()
                os.fsync(fh.fileno())
                t.durable = t.received
                self._sync()
        return t.durable

    def _sync(self) -> None:
        t = self.transfer
        assert t is not None
        t.unsynced_chunks = 0
        _write_json(self.dir / "staged.json", {"manifest": t.manifest_bytes.hex(),
                                               "signature": t.signature.hex(),
                                               "durable": t.durable})

    def commit(self) -> None:
        t = self.transfer
        if t is None:
            raise DeviceFault(ErrorCode.FIRMWARE_NO_TRANSFER, "no firmware transfer to commit")
        if t.durable < t.manifest.size:
            raise DeviceFault(ErrorCode.FIRMWARE_INCOMPLETE,
                              f"{t.durable} of {t.manifest.size} bytes received", t.durable)
        self._check_signature(t.manifest, t.manifest_bytes, t.signature)
        staged = self.dir / "staged.bin"
        if _blake3_file(staged, t.manifest.size) != t.manifest.blake3:
            self._discard_transfer()
            raise DeviceFault(ErrorCode.FIRMWARE_HASH,
                              "staged image BLAKE3 differs from the manifest; discarded", 0)
        slot = self.slots.inactive
        staged.replace(self.dir / f"slot-{slot}.img")
        self.slots.versions[slot] = t.manifest.version
        self.slots.pending = slot
        self._save_slots()
        self._discard_transfer()
        log.info("recorder %s: firmware %s committed to slot %s", self.spec.serial,
                 t.manifest.version, slot)


def _blake3_file(path: Path, size: int) -> str:
    h = blake3()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            h.update(block)
    if path.stat().st_size != size:
        return ""
    return h.hexdigest()
