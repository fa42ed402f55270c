"""Canonical test vectors: one or more frames per message type, plus an auth example.

``python -m firmware_bridge.vectors`` prints the "Test vectors" section of
docs/protocol.md; a test checks the document still contains exactly this text, so the
document and the codec cannot drift apart.
"""

from __future__ import annotations

import io
import zlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge import auth, fwpackage
from firmware_bridge import messages as m
from firmware_bridge.codec import encode_frame

BYTES_PER_LINE = 24

AUTH_SECRET = b"example fleet secret"
AUTH_CHALLENGE = bytes(range(0x20, 0x40))
AUTH_NONCE = bytes(range(0xA0, 0xC0))
DIGEST = bytes.fromhex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")  # b""

FW_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(0x40, 0x60)))
FW_IMAGE = b"example firmware image\n"
FW_PACKAGE = fwpackage.build_package(
    FW_IMAGE, vendor="Example", models=["BWC-7"], version="2.5.0", min_from="2.0",
    max_from=None, private_key=FW_KEY, created="2026-01-01T00:00:00Z",
)
FW_HEADER = fwpackage.read_header(io.BytesIO(FW_PACKAGE))
FW_DIGEST = bytes.fromhex(FW_HEADER.manifest.blake3)

VECTORS: list[tuple[str, int, m.Message]] = [
    ("hello-request", 0x0001, m.HelloRequest(1, 1)),
    ("hello", 0x0001, m.Hello(1, "BWC-7", m.MAX_PAYLOAD, True)),
    ("auth-start", 0x0002, m.AuthStart()),
    ("auth-challenge", 0x0002, m.AuthChallenge(AUTH_CHALLENGE)),
    (
        "auth-prove",
        0x0003,
        m.AuthProve(AUTH_NONCE, auth.host_proof(AUTH_SECRET, AUTH_CHALLENGE, AUTH_NONCE)),
    ),
    (
        "auth-accepted",
        0x0003,
        m.AuthAccepted(auth.device_proof(AUTH_SECRET, AUTH_CHALLENGE, AUTH_NONCE)),
    ),
    ("get-identity", 0x0004, m.GetIdentity()),
    ("identity", 0x0004, m.Identity("DA000042", "BWC-7", "rev C", "2.4.1")),
    ("get-officer", 0x0005, m.GetOfficer()),
    ("officer-record", 0x0005, m.OfficerRecord("0012345", "张三", "330100", "市卫生监督所")),
    ("officer-record-unassigned", 0x0006, m.OfficerRecord("", "", "", "")),
    (
        "set-officer",
        0x0007,
        m.SetOfficer(m.OfficerRecord("0012345", "张三", "330100", "市卫生监督所")),
    ),
    ("ok", 0x0007, m.Ok()),
    ("get-clock", 0x0008, m.GetClock()),
    ("clock-time", 0x0008, m.ClockTime(1_767_225_600_123)),
    ("set-clock", 0x0009, m.SetClock(1_767_225_600_456)),
    ("get-battery", 0x000A, m.GetBattery()),
    ("battery-status", 0x000A, m.BatteryStatus(87, 4012, True, 31.5, 120, 96)),
    ("battery-status-cold", 0x000B, m.BatteryStatus(5, 3350, False, -12.3, 900, 71)),
    ("get-storage", 0x000C, m.GetStorage()),
    ("storage-status", 0x000C, m.StorageStatus(64_000_000_000, 51_200_000_000, 1342, False)),
    ("set-mass-storage-on", 0x000D, m.SetMassStorage(True)),
    ("list-recordings", 0x000E, m.ListRecordings(0, 256)),
    (
        "recording-page",
        0x000E,
        m.RecordingPage(
            2,
            (
                m.RecordingInfo(
                    b"DCIM/100REC/V0001.MP4", 734_003_200, 1_767_225_600_000, 1_767_226_200_000
                ),
                m.RecordingInfo(b"DCIM/\xb2\xe2\xca\xd4.AVI", 0, 0, 0),  # GBK, not UTF-8
            ),
        ),
    ),
    ("recording-page-empty", 0x000F, m.RecordingPage(2, ())),
    ("delete-recording", 0x0010, m.DeleteRecording(b"DCIM/100REC/V0002.MP4", 0, DIGEST)),
    ("get-event-log", 0x0011, m.GetEventLog(40, 256)),
    (
        "event-log-page",
        0x0011,
        m.EventLogPage(
            43,
            (
                m.DeviceLogEvent(41, 1_767_225_600_000, m.LogKind.RECORDING_START, "V0001"),
                m.DeviceLogEvent(42, 1_767_226_200_000, m.LogKind.RECORDING_STOP, "V0001"),
            ),
        ),
    ),
    ("error-mismatch", 0x0010, m.ErrorReply(m.ErrorCode.MISMATCH, "BLAKE3 differs")),
    ("error-auth-required", 0x0012, m.ErrorReply(m.ErrorCode.AUTH_REQUIRED, "")),
    ("get-firmware-status", 0x0013, m.GetFirmwareStatus()),
    (
        "firmware-status",
        0x0013,
        m.FirmwareStatus("2.4.1", "A", "2.4.1", "2.3.0", m.FirmwareResult.OK, FW_DIGEST, 16,
                         FW_HEADER.manifest.size),
    ),
    (
        "firmware-begin-request",
        0x0014,
        m.FirmwareBeginRequest(FW_HEADER.manifest_bytes, FW_HEADER.signature),
    ),
    ("firmware-begin", 0x0014, m.FirmwareBegin(0, m.FIRMWARE_CHUNK_MAX)),
    ("firmware-chunk", 0x0015, m.FirmwareChunk(0, zlib.crc32(FW_IMAGE), FW_IMAGE)),
    ("firmware-progress", 0x0015, m.FirmwareProgress(len(FW_IMAGE))),
    (
        "firmware-refusal-offset",
        0x0016,
        m.FirmwareRefusal(m.ErrorCode.FIRMWARE_OFFSET, 16, "continue at 16"),
    ),
    ("firmware-commit", 0x0017, m.FirmwareCommit()),
    ("error-firmware-hash", 0x0017, m.ErrorReply(m.ErrorCode.FIRMWARE_HASH, "")),
    ("reboot", 0x0018, m.Reboot()),
]


def hex_lines(data: bytes, indent: str = "  ") -> list[str]:
    return [
        indent + data[i : i + BYTES_PER_LINE].hex(" ") for i in range(0, len(data), BYTES_PER_LINE)
    ]


def render_markdown() -> str:
    """The vectors as they appear in docs/protocol.md (between the two marker comments)."""
    out = ["<!-- vectors:begin (generated by python -m firmware_bridge.vectors) -->", ""]
    out += ["Authentication example:", "", "```text"]
    out.append(f"secret     {AUTH_SECRET.hex(' ')}  ({AUTH_SECRET.decode()!r})")
    out.append(f"challenge  {AUTH_CHALLENGE.hex(' ')}")
    out.append(f"host_nonce {AUTH_NONCE.hex(' ')}")
    out.append(f"host proof   {auth.host_proof(AUTH_SECRET, AUTH_CHALLENGE, AUTH_NONCE).hex()}")
    out.append(f"device proof {auth.device_proof(AUTH_SECRET, AUTH_CHALLENGE, AUTH_NONCE).hex()}")
    out += ["```", "", "Firmware package example (signing key: the Ed25519 private key whose",
            "32 seed bytes are 40 41 .. 5f; the image is the 23 bytes of",
            "`example firmware image\\n`):", "", "```text"]
    out.append(f"public key {fwpackage.public_key_raw(FW_KEY.public_key()).hex(' ')}")
    out.append(f"key_id     {fwpackage.key_id(FW_KEY.public_key())}")
    out.append(f"manifest   {FW_HEADER.manifest_bytes.decode()}")
    out.append(f"package bytes={len(FW_PACKAGE)}")
    out += hex_lines(FW_PACKAGE)
    out += ["```", "", "Frames (delimiters included):", "", "```text"]
    for name, rid, msg in VECTORS:
        frame = encode_frame(rid, msg)
        out.append(f"vector {name} type=0x{msg.TYPE_ID:02x} id=0x{rid:04x} bytes={len(frame)}")
        out += hex_lines(frame)
    out += ["```", "", "<!-- vectors:end -->"]
    return "\n".join(out) + "\n"


def parse_vectors(text: str) -> dict[str, bytes]:
    """``vector NAME ...`` blocks of a document -> frame bytes, for checking it."""
    found: dict[str, bytes] = {}
    name: str | None = None
    for line in text.splitlines():
        if line.startswith("vector "):
            name = line.split()[1]
            found[name] = b""
        elif name is not None and line.startswith("  ") and line.strip():
            found[name] += bytes.fromhex(line)
        else:
            name = None
    return found


if __name__ == "__main__":
    print(render_markdown(), end="")
