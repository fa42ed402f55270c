"""Fuzz: 100,000+ random and mutated byte streams never break the decoder or the device.

Seeded, so a failure reproduces; the seed and iteration are in the assertion message.
"""

from __future__ import annotations

import random

from bridge_helpers import SECRET, MemoryRecorder
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge.codec import Frame, FrameDecoder, Rejected, decode_frame, encode_frame
from firmware_bridge.errors import ProtocolError
from hw_sim.endpoint import DeviceEndpoint

SEED = 20261123
N_STREAMS = 100_000

SAMPLES: list[m.Message] = [
    m.HelloRequest(),
    m.AuthProve(b"n" * 32, b"p" * 32),
    m.SetOfficer(m.OfficerRecord("1234567", "张三", "U-01", "第一大队")),
    m.SetClock(1_767_225_600_123),
    m.ListRecordings(10, 256),
    m.DeleteRecording(b"DCIM/\xff.MP4", 12345, b"\x00" * 32),
    m.GetEventLog(3, 100),
    m.Hello(1, "BWC-7"),
    m.Identity("DA000042", "BWC-7", "rev C", "2.4.1"),
    m.BatteryStatus(87, 4012, True, -3.5, 120, 96),
    m.StorageStatus(2**36, 2**35, 1234, False),
    m.RecordingPage(2, (m.RecordingInfo(b"a/b.mp4", 1, 2, 3),)),
    m.EventLogPage(9, (m.DeviceLogEvent(1, 2, m.LogKind.HARDWARE_FAULT, "x"),)),
    m.ErrorReply(m.ErrorCode.MISMATCH, "size differs"),
    m.Ok(),
]

# (request id, message, encoded frame), encoded once: the fuzz loop measures the decoder.
_r = random.Random(SEED - 1)
FRAMES = [
    (rid, msg, encode_frame(rid, msg))
    for rid, msg in ((_r.randrange(0x10000), _r.choice(SAMPLES)) for _ in range(1000))
]


def _mutate(rng: random.Random, data: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:  # flip bits
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 2:  # insert random bytes (maybe delimiters)
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and data:  # delete a span
            i = rng.randrange(len(data))
            del data[i : i + rng.randint(1, 8)]
        elif op == 4 and data:  # duplicate a span
            i = rng.randrange(len(data))
            data[i:i] = data[i : i + rng.randint(1, 16)]
        else:  # overwrite a byte with a delimiter or 0xFF
            if data:
                data[rng.randrange(len(data))] = rng.choice((0, 0xFF))
    return data


def _junk(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:  # high-entropy without any delimiter: must not eat the next frame
        return rng.randbytes(rng.randint(0, 64)).replace(b"\x00", b"\x01")
    frame = rng.choice(FRAMES)[2]
    if kind == 2:
        return bytes(_mutate(rng, bytearray(frame)))
    return bytes(_mutate(rng, bytearray(frame + rng.choice(FRAMES)[2])))


def test_decoder_survives_and_resynchronises() -> None:
    rng = random.Random(SEED)
    dec = FrameDecoder()
    single_errors = 0
    for i in range(N_STREAMS):
        junk = _junk(rng)
        rid, msg, frame = rng.choice(FRAMES)
        stream = junk + frame
        # Feed in 1..3 chunks at random places.
        cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(3)))
        out: list[Frame | Rejected] = []
        prev = 0
        for cut in [*cuts, len(stream)]:
            out += dec.feed(stream[prev:cut])
            prev = cut
        assert out and out[-1] == Frame(rid, msg), f"seed {SEED} iteration {i}"  # type: ignore[arg-type]
        # The one-shot decoder raises only the codec's own errors on the junk itself.
        try:
            decode_frame(junk)
        except ProtocolError:
            single_errors += 1
    s = dec.stats
    assert s.frames >= N_STREAMS
    assert s.discarded > N_STREAMS // 2  # the junk was seen and counted, not silently eaten
    assert single_errors > N_STREAMS // 2


def test_device_endpoint_survives_junk_and_still_answers() -> None:
    rng = random.Random(SEED + 1)
    rec = MemoryRecorder()
    ep = DeviceEndpoint(rec, SECRET)
    for i in range(20_000):
        replies = ep.feed(_junk(rng))
        for r in replies:  # every reply it makes is a valid frame
            decode_frame(r)
        out = ep.feed(encode_frame(42, m.HelloRequest()))
        assert decode_frame(out[-1]).message == m.Hello(1, "BWC-7"), f"iteration {i}"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(SAMPLES), st.integers(0, 0xFFFF))
def test_any_bytes_then_a_frame(junk: bytes, msg: m.Message, rid: int) -> None:
    dec = FrameDecoder()
    out = dec.feed(junk)
    assert all(isinstance(o, Frame | Rejected) for o in out)
    assert dec.feed(encode_frame(rid, msg))[-1] == Frame(rid, msg)  # type: ignore[arg-type]
