"""The simulator's development signing key: virtual recorders trust it unless told otherwise.

Deterministic (derived from a fixed label), so demos, tests and the dock's config can build
and check packages without generating keys. Never trusted by a real recorder.
"""

from __future__ import annotations

from blake3 import blake3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_bridge.fwpackage import PackageError, load_public_key
from hw_sim.errors import SpecError

_SEED_LABEL = b"dock-sim development firmware signing key v1"


def sim_vendor_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(blake3(_SEED_LABEL).digest())


def public_hex(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as hex (the form a recorder spec lists)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


SIM_VENDOR_PUBLIC = public_hex(sim_vendor_key().public_key())


def parse_trusted_key(text: str) -> Ed25519PublicKey:
    """A spec's trusted key: 64 hex digits (raw key) or PEM text ("PUBLIC KEY")."""
    stripped = text.strip()
    try:
        data = bytes.fromhex(stripped) if len(stripped) == 64 else stripped.encode()
        return load_public_key(data)
    except (ValueError, PackageError) as exc:
        raise SpecError(f"trusted firmware key is not 64 hex digits or a PEM key: {exc}") from None
