"""Mutual challenge-response over a per-fleet secret (HMAC-SHA256), pure.

The device sends a random challenge; the host answers with its own random nonce and
``HMAC(secret, HOST_LABEL || challenge || host_nonce)``; the device checks that and answers
``HMAC(secret, DEVICE_LABEL || challenge || host_nonce)``, so the dock also learns the
recorder belongs to the fleet. Distinct labels stop one proof being replayed as the other.
"""

from __future__ import annotations

import hashlib
import hmac

SECRET_MIN_BYTES = 16  # shortest fleet secret worth an HMAC key (after stripping white space)
HOST_LABEL = b"dock-agent/auth/v1/host\x00"
DEVICE_LABEL = b"dock-agent/auth/v1/device\x00"


def host_proof(secret: bytes, challenge: bytes, host_nonce: bytes) -> bytes:
    return hmac.new(secret, HOST_LABEL + challenge + host_nonce, hashlib.sha256).digest()


def device_proof(secret: bytes, challenge: bytes, host_nonce: bytes) -> bytes:
    return hmac.new(secret, DEVICE_LABEL + challenge + host_nonce, hashlib.sha256).digest()


def proofs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a, b)
