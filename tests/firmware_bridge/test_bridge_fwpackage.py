"""Firmware package codec: round trips, and every refusal with a specific error."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import fwpackage as fp
from firmware_bridge.errors import BridgeError, FirmwareBridgeError
from firmware_bridge.vectors import FW_IMAGE, FW_KEY, FW_PACKAGE, parse_vectors

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KEYS = fp.keyring([KEY.public_key()])
DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def package(image: bytes = b"firmware image", **kw: object) -> bytes:
    args: dict[str, object] = dict(vendor="Acme", models=["DSJ-SIM1"], version="1.2.0",
                                   min_from="1.0", max_from=None, private_key=KEY,
                                   created="2026-11-27T04:00:00Z")
    args.update(kw)
    return fp.build_package(image, **args)  # type: ignore[arg-type]


def check(data: bytes, keys: dict[str, object] | None = None) -> fp.PackageHeader:
    f = io.BytesIO(data)
    header = fp.read_header(f)
    fp.verify_signature(header, keys if keys is not None else KEYS)  # type: ignore[arg-type]
    fp.verify_image(header, f)
    return header


def with_manifest(data: bytes, mutate: object) -> bytes:
    """The package with its manifest rewritten (signature left as it was)."""
    header = fp.read_header(io.BytesIO(data))
    body = mutate(header.manifest_bytes)  # type: ignore[operator]
    return (fp.MAGIC + struct.pack(">I", len(body)) + body + header.signature
            + data[header.image_offset:])


@settings(max_examples=40, deadline=None)
@given(image=st.binary(min_size=1, max_size=5000),
       models=st.lists(st.text("ABCDEFGHIJ-0123456789", min_size=1, max_size=12),
                       min_size=1, max_size=3, unique=True),
       version=st.lists(st.integers(0, 999), min_size=1, max_size=4))
def test_round_trip(image: bytes, models: list[str], version: list[int]) -> None:
    v = ".".join(map(str, version))
    data = package(image, models=models, version=v)
    header = check(data)
    m = header.manifest
    assert (m.models, m.version, m.size, m.blake3) == (tuple(models), v, len(image),
                                                       blake3(image).hexdigest())
    assert m.key_id == fp.key_id(KEY.public_key())
    assert data[header.image_offset:] == image
    assert fp.parse_manifest(header.manifest_bytes) == m


def test_doc_package_example_matches_the_codec() -> None:
    doc = DOC.read_text(encoding="utf-8")
    lines = doc[doc.index("package bytes="):].split("```")[0].splitlines()
    assert bytes.fromhex("".join(lines[1:])) == FW_PACKAGE
    header = check(FW_PACKAGE, fp.keyring([FW_KEY.public_key()]))  # type: ignore[arg-type]
    assert FW_PACKAGE[header.image_offset:] == FW_IMAGE
    assert "firmware-begin-request" in parse_vectors(doc)


def test_errors_are_bridge_errors() -> None:
    assert FirmwareBridgeError is BridgeError
    for cls in (fp.MalformedPackage, fp.UnknownKey, fp.BadSignature, fp.ImageMismatch):
        assert issubclass(cls, fp.PackageError)
        assert issubclass(cls, BridgeError)


def test_bad_signature_is_refused() -> None:
    data = bytearray(package())
    header = fp.read_header(io.BytesIO(bytes(data)))
    data[header.image_offset - 1] ^= 0x01  # last signature byte
    with pytest.raises(fp.BadSignature, match="does not verify"):
        check(bytes(data))


def test_signed_by_another_key_with_a_trusted_key_id_is_refused() -> None:
    forged = package(private_key=OTHER)
    other_id = fp.key_id(OTHER.public_key())
    with pytest.raises(fp.BadSignature):
        check(forged, {other_id: KEY.public_key()})  # type: ignore[dict-item]


def test_unknown_key_is_refused() -> None:
    with pytest.raises(fp.UnknownKey, match="not trusted"):
        check(package(private_key=OTHER))


def test_changed_manifest_fails_the_signature() -> None:
    tampered = with_manifest(package(), lambda b: b.replace(b'"1.2.0"', b'"9.2.0"'))
    with pytest.raises(fp.BadSignature):
        check(tampered)


@pytest.mark.parametrize("cut", [1, 5, 8, 11, 12, 40, -70, -1])
def test_truncated_package_is_refused(cut: int) -> None:
    data = package(b"x" * 100)
    with pytest.raises((fp.MalformedPackage, fp.ImageMismatch), match="truncated"):
        check(data[:cut] if cut > 0 else data[:len(data) + cut])


def test_extra_bytes_after_the_image_are_refused() -> None:
    with pytest.raises(fp.ImageMismatch, match="after the image"):
        check(package() + b"\x00")


def test_changed_image_is_refused() -> None:
    data = bytearray(package(b"y" * 64))
    data[-1] ^= 0xFF
    with pytest.raises(fp.ImageMismatch, match="BLAKE3"):
        check(bytes(data))


def test_bad_magic_and_lengths_are_refused() -> None:
    data = package()
    with pytest.raises(fp.MalformedPackage, match="magic"):
        fp.read_header(io.BytesIO(b"DOCKFW\x00\x02" + data[8:]))
    for n in (0, fp.MAX_MANIFEST + 1):
        with pytest.raises(fp.MalformedPackage, match="length"):
            fp.read_header(io.BytesIO(fp.MAGIC + struct.pack(">I", n) + data[12:]))


def _json(d: dict[str, object]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d.pop("vendor"), "missing"),
    (lambda d: d.update(extra=1), "unknown"),
    (lambda d: d.update(format=2), "format"),
    (lambda d: d.update(models=[]), "models"),
    (lambda d: d.update(models=["A", "A"]), "repeats"),
    (lambda d: d.update(version="1.2.3.4.5"), "dotted"),
    (lambda d: d.update(version="1.02"), "dotted"),
    (lambda d: d.update(min_from=3), "min_from"),
    (lambda d: d.update(size=0), "size"),
    (lambda d: d.update(size=True), "size"),
    (lambda d: d.update(blake3="AB" * 32), "blake3"),
    (lambda d: d.update(key_id="0" * 15), "key_id"),
    (lambda d: d.update(created="2026-11-27 04:00:00"), "created"),
    (lambda d: d.update(vendor="a\x1bb"), "control"),
])
def test_malformed_manifest_is_refused(mutate: object, match: str) -> None:
    header = fp.read_header(io.BytesIO(package()))
    d = json.loads(header.manifest_bytes)
    mutate(d)  # type: ignore[operator]
    with pytest.raises(fp.MalformedPackage, match=match):
        fp.parse_manifest(_json(d))


@pytest.mark.parametrize("spelling", [
    lambda b: b.replace(b",", b", "),  # spaces
    lambda b: b'{"vendor":"Acme",' + b[1:],  # duplicate key
    lambda b: b.replace(b'"size":', b'"size":1e0+').replace(b"+", b""),  # not canonical
    lambda b: b[:-1] + b',"x":NaN}',
    lambda b: b"[" + b + b"]",
    lambda b: b"\xff" + b,
])
def test_non_canonical_manifest_is_refused(spelling: object) -> None:
    header = fp.read_header(io.BytesIO(package()))
    with pytest.raises(fp.MalformedPackage):
        fp.parse_manifest(spelling(header.manifest_bytes))  # type: ignore[operator]


def test_versions_compare_as_numbers() -> None:
    assert fp.parse_version("1.4") == fp.parse_version("1.4.0")
    assert fp.parse_version("1.10") > fp.parse_version("1.9.9")
    for bad in ("", "1.", "a", "-1", "1..2", "1.2.3.4.5"):
        with pytest.raises(fp.MalformedPackage):
            fp.parse_version(bad)
    m = fp.read_header(io.BytesIO(package(min_from="1.2", max_from="1.9"))).manifest
    assert [m.accepts_from(v) for v in ("1.1.9", "1.2", "1.5", "1.9.0", "1.9.1")] == [
        False, True, True, True, False]


def test_public_keys_load_from_pem_and_raw() -> None:
    pub = KEY.public_key()
    for data in (fp.public_key_pem(pub), fp.public_key_raw(pub)):
        assert fp.key_id(fp.load_public_key(data)) == fp.key_id(pub)
    with pytest.raises(fp.MalformedPackage):
        fp.load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
