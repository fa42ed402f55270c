"""Firmware package codec and trust checks (pure; no I/O beyond a binary file object).

A package (``*.dfw``) is::

    magic b"DOCKFW\\x00\\x01" | u32 BE manifest length | manifest (canonical JSON, UTF-8)
    | Ed25519 signature (64) over SIGNING_CONTEXT + manifest | image (manifest["size"] bytes)

The signature covers the manifest, and the manifest names the image's size and BLAKE3, so
one signature check plus one streamed hash proves the whole package. The recorder repeats
both checks itself before it commits an image (docs/protocol.md, "Firmware update").
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from blake3 import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_bridge.errors import BridgeError

MAGIC = b"DOCKFW\x00\x01"
SIGNING_CONTEXT = b"dock-firmware-manifest-v1\x00"
FORMAT = 1
MAX_MANIFEST = 65536
MAX_IMAGE = 256 * 1024 * 1024
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
MANIFEST_KEYS = frozenset(
    {"format", "vendor", "models", "version", "min_from", "max_from", "size", "blake3",
     "key_id", "created"}
)
_LENGTH = struct.Struct(">I")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX16 = re.compile(r"[0-9a-f]{16}")
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
_VERSION_PART = re.compile(r"0|[1-9]\d{0,5}")
_TEXT_MAX = 64
_READ_CHUNK = 1 << 20


class PackageError(BridgeError):
    """A firmware package (or manifest) cannot be accepted."""


class MalformedPackage(PackageError):
    """The bytes are not a well-formed package or manifest."""


class UnknownKey(PackageError):
    """The manifest names a signing key that is not trusted here."""


class BadSignature(PackageError):
    """The signature does not verify against the named trusted key."""


class ImageMismatch(PackageError):
    """The image is not the size or BLAKE3 the signed manifest names."""


@dataclass(frozen=True)
class Manifest:
    format: int
    vendor: str
    models: tuple[str, ...]
    version: str
    min_from: str | None
    max_from: str | None
    size: int
    blake3: str
    key_id: str
    created: str

    def to_bytes(self) -> bytes:
        """The canonical JSON the signature covers."""
        return canonical_json({
            "format": self.format, "vendor": self.vendor, "models": list(self.models),
            "version": self.version, "min_from": self.min_from, "max_from": self.max_from,
            "size": self.size, "blake3": self.blake3, "key_id": self.key_id,
            "created": self.created,
        })

    def accepts_from(self, running: str) -> bool:
        """Whether a recorder running ``running`` may install this (min_from/max_from)."""
        have = parse_version(running)
        if self.min_from is not None and have < parse_version(self.min_from):
            return False
        return self.max_from is None or have <= parse_version(self.max_from)


@dataclass(frozen=True)
class PackageHeader:
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    image_offset: int


def canonical_json(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_version(text: str) -> tuple[int, ...]:
    """Dotted decimal, 1..4 parts ("1.4.2"). Trailing zero parts are dropped, so "1.4" and
    "1.4.0" compare equal and tuple order is version order."""
    if not isinstance(text, str):
        raise MalformedPackage(f"version must be a string, got {type(text).__name__}")
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_VERSION_PART.fullmatch(p) for p in parts):
        raise MalformedPackage(f"version {text!r} is not 1..4 dotted decimal numbers")
    out = [int(p) for p in parts]
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


def public_key_raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of BLAKE3 of the raw 32-byte public key, as 16 lowercase hex."""
    return blake3(public_key_raw(public_key)).digest()[:8].hex()


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM ("PUBLIC KEY") file's bytes, or 32 raw bytes."""
    try:
        if len(data) == PUBLIC_KEY_BYTES:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise MalformedPackage(f"not an Ed25519 public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise MalformedPackage(f"not an Ed25519 public key: {type(key).__name__}")
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def keyring(keys: Iterable[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id, the mapping verify_signature takes."""
    return {key_id(k): k for k in keys}


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise MalformedPackage(f"manifest repeats key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> object:
    raise MalformedPackage(f"manifest holds {name}")


def _text(d: Mapping[str, object], key: str) -> str:
    v = d[key]
    if not isinstance(v, str) or not 1 <= len(v.encode("utf-8")) <= _TEXT_MAX:
        raise MalformedPackage(f"manifest {key} must be a string of 1..{_TEXT_MAX} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
        raise MalformedPackage(f"manifest {key} holds control characters")
    return v


def _optional_version(d: Mapping[str, object], key: str) -> str | None:
    v = d[key]
    if v is None:
        return None
    if not isinstance(v, str):
        raise MalformedPackage(f"manifest {key} must be a version string or null")
    parse_version(v)
    return v


def _matching(d: Mapping[str, object], key: str, pattern: re.Pattern[str], what: str) -> str:
    v = d[key]
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise MalformedPackage(f"manifest {key} must be {what}")
    return v


def _models(d: Mapping[str, object]) -> tuple[str, ...]:
    v = d["models"]
    if not isinstance(v, list) or not v:
        raise MalformedPackage("manifest models must be a non-empty list")
    models = tuple(_text({"models": m}, "models") for m in v)
    if len(set(models)) != len(models):
        raise MalformedPackage("manifest models repeats a model")
    return models


def _size(d: Mapping[str, object]) -> int:
    v = d["size"]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_IMAGE:
        raise MalformedPackage(f"manifest size must be an integer in 1..{MAX_IMAGE}")
    return v


def manifest_from_dict(d: Mapping[str, object]) -> Manifest:
    """Check every key of a decoded manifest (closed set, all required, typed)."""
    missing, extra = MANIFEST_KEYS - set(d), set(d) - MANIFEST_KEYS
    if missing or extra:
        raise MalformedPackage(
            f"manifest keys: missing {sorted(missing)}, unknown {sorted(extra)}")
    fmt = d["format"]
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise MalformedPackage(f"manifest format must be {FORMAT}, got {fmt!r}")
    version = d["version"]
    if not isinstance(version, str):
        raise MalformedPackage("manifest version must be a string")
    parse_version(version)
    return Manifest(
        format=FORMAT, vendor=_text(d, "vendor"), models=_models(d), version=version,
        min_from=_optional_version(d, "min_from"), max_from=_optional_version(d, "max_from"),
        size=_size(d), blake3=_matching(d, "blake3", _HEX64, "64 lowercase hex digits"),
        key_id=_matching(d, "key_id", _HEX16, "16 lowercase hex digits"),
        created=_matching(d, "created", _CREATED, 'RFC 3339 UTC ("...Z")'),
    )


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from its exact signed bytes; MalformedPackage unless canonical and valid."""
    if not 1 <= len(data) <= MAX_MANIFEST:
        raise MalformedPackage(f"manifest must be 1..{MAX_MANIFEST} bytes, got {len(data)}")
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedPackage(f"manifest is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedPackage("manifest must be a JSON object")
    manifest = manifest_from_dict(value)
    if manifest.to_bytes() != data:
        raise MalformedPackage("manifest is not canonical JSON (sorted keys, no spaces)")
    return manifest


def _read_exactly(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise MalformedPackage(f"package truncated in the {what}")
    return data


def read_header(f: BinaryIO) -> PackageHeader:
    """Magic, manifest and signature; leaves ``f`` at the first image byte."""
    if _read_exactly(f, len(MAGIC), "magic") != MAGIC:
        raise MalformedPackage("not a dock firmware package (bad magic)")
    (length,) = _LENGTH.unpack(_read_exactly(f, _LENGTH.size, "manifest length"))
    if not 1 <= length <= MAX_MANIFEST:
        raise MalformedPackage(f"manifest length {length} outside 1..{MAX_MANIFEST}")
    manifest_bytes = _read_exactly(f, length, "manifest")
    manifest = parse_manifest(manifest_bytes)
    signature = _read_exactly(f, SIGNATURE_BYTES, "signature")
    offset = len(MAGIC) + _LENGTH.size + length + SIGNATURE_BYTES
    return PackageHeader(manifest, manifest_bytes, signature, offset)


def check_signature(
    manifest: Manifest, manifest_bytes: bytes, signature: bytes,
    keys: Mapping[str, Ed25519PublicKey],
) -> None:
    """UnknownKey / BadSignature unless ``signature`` over the manifest verifies."""
    key = keys.get(manifest.key_id)
    if key is None:
        raise UnknownKey(f"package signed with key {manifest.key_id}, which is not trusted")
    try:
        key.verify(signature, SIGNING_CONTEXT + manifest_bytes)
    except InvalidSignature:
        raise BadSignature(
            f"signature of {manifest.vendor} {manifest.version} does not verify with key "
            f"{manifest.key_id}") from None


def verify_signature(header: PackageHeader, keys: Mapping[str, Ed25519PublicKey]) -> None:
    check_signature(header.manifest, header.manifest_bytes, header.signature, keys)


def verify_image(header: PackageHeader, f: BinaryIO) -> None:
    """Stream the image from ``f`` (seeked to it when seekable): exact size, BLAKE3, and
    nothing after it."""
    if f.seekable():
        f.seek(header.image_offset)
    want, h, got = header.manifest.size, blake3(), 0
    while got < want:
        block = f.read(min(_READ_CHUNK, want - got))
        if not block:
            raise ImageMismatch(f"image truncated: {got} of {want} bytes")
        h.update(block)
        got += len(block)
    if f.read(1):
        raise ImageMismatch("bytes after the image")
    if h.hexdigest() != header.manifest.blake3:
        raise ImageMismatch("image BLAKE3 differs from the signed manifest")


def _created_text(created: datetime | str) -> str:
    if isinstance(created, datetime):
        if created.tzinfo is None:
            raise MalformedPackage("created must be timezone-aware")
        return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return created


def build_package(
    image: bytes, *, vendor: str, models: Iterable[str], version: str,
    min_from: str | None, max_from: str | None, private_key: Ed25519PrivateKey,
    created: datetime | str,
) -> bytes:
    """A signed package (the vendor's build step; tests and the simulator use it too)."""
    manifest = manifest_from_dict({
        "format": FORMAT, "vendor": vendor, "models": list(models), "version": version,
        "min_from": min_from, "max_from": max_from, "size": len(image),
        "blake3": blake3(image).hexdigest(), "key_id": key_id(private_key.public_key()),
        "created": _created_text(created),
    })
    body = manifest.to_bytes()
    signature = private_key.sign(SIGNING_CONTEXT + body)
    return MAGIC + _LENGTH.pack(len(body)) + body + signature + image
