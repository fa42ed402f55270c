"""Codec: round trips for every message, field limits, framing and the incremental decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import messages as m
from firmware_bridge.cobs import cobs_decode, cobs_encode
from firmware_bridge.codec import (
    MAX_ENCODED,
    Frame,
    FrameDecoder,
    Rejected,
    decode_frame,
    encode_frame,
)
from firmware_bridge.errors import FieldError, FrameError, PayloadError, ProtocolError

from .bridge_helpers import raw_frame as _raw_frame
from .strategies import MESSAGES, any_message, officers


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(m.MESSAGE_TYPES.values())


@pytest.mark.parametrize("cls", list(MESSAGES), ids=lambda c: c.__name__)
def test_round_trip_each_type(cls: type[m.Message]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(MESSAGES[cls], st.integers(0, 0xFFFF))
    def check(msg: m.Message, rid: int) -> None:
        assert type(msg) is cls
        payload = msg.encode_payload()
        assert m.decode_message(cls.TYPE_ID, payload) == msg
        wire = encode_frame(rid, msg)
        assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
        assert decode_frame(wire) == Frame(rid, msg)

    check()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), any_message), max_size=8), st.data())
def test_decoder_reassembles_any_chunking(
    frames: list[tuple[int, m.Message]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(rid, msg) for rid, msg in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    out: list[Frame | Rejected] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += dec.feed(stream[prev:cut])
        prev = cut
    assert out == [Frame(rid, msg) for rid, msg in frames]
    assert dec.stats.discarded == 0


@given(st.binary(max_size=600))
def test_cobs_round_trip(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert cobs_decode(enc) == data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("officer_no", "12345678"),  # 8 bytes, width 7
        ("officer_no", "警号1234"),  # 3+3+4 = 10 bytes, though only 6 characters
        ("officer_name", "张" * 11 + "x"),  # 34 bytes
        ("unit_no", "x" * 14),
        ("unit_name", "a" * 34),
        ("officer_name", "nul\x00inside"),
        ("officer_name", "\ud800"),  # lone surrogate: not UTF-8 encodable
    ],
)
def test_officer_fields_that_do_not_fit_are_refused(field: str, value: str) -> None:
    fields = {"officer_no": "", "officer_name": "", "unit_no": "", "unit_name": ""}
    fields[field] = value
    with pytest.raises(FieldError):
        m.OfficerRecord(**fields)


def test_officer_fields_exactly_full_fit() -> None:
    rec = m.OfficerRecord("1234567", "张" * 11, "x" * 13, "a" * 33)
    assert m.OfficerRecord.decode_payload(rec.encode_payload()) == rec
    assert len(rec.encode_payload()) == 7 + 33 + 13 + 33


@given(officers)
def test_officer_record_is_fixed_size(rec: m.OfficerRecord) -> None:
    assert len(rec.encode_payload()) == 86


@pytest.mark.parametrize(
    "name",
    [b"", b"/abs/path", b"a//b", b"a/../b", b"./a", b"a/", b"nul\x00", b"x" * 1025],
)
def test_bad_recording_names_refused(name: bytes) -> None:
    with pytest.raises(FieldError):
        m.RecordingInfo(name, 1, 0, 0)


def test_non_utf8_recording_names_survive() -> None:
    info = m.RecordingInfo(b"DCIM/\xff\xfe\x80.MP4", 10, 1, 2)
    page = m.RecordingPage(1, (info,))
    assert m.RecordingPage.decode_payload(page.encode_payload()) == page


@pytest.mark.parametrize(
    "build",
    [
        lambda: m.BatteryStatus(101, 0, False, 0.0, 0, 0),
        lambda: m.BatteryStatus(50, 0, False, float("nan"), 0, 0),
        lambda: m.BatteryStatus(50, 70000, False, 0.0, 0, 0),
        lambda: m.BatteryStatus(50, 0, 1, 0.0, 0, 0),  # type: ignore[arg-type]
        lambda: m.SetClock(-1),
        lambda: m.SetClock(True),
        lambda: m.ListRecordings(0, 0),
        lambda: m.DeleteRecording(b"a", 1, b"short"),
        lambda: m.HelloRequest(2, 1),
        lambda: m.Identity("123456789", "", "", ""),
        lambda: m.AuthChallenge(b"x" * 31),
        lambda: m.RecordingPage(0, [m.RecordingInfo(b"a", 1, 0, 0)]),  # type: ignore[arg-type]
    ],
)
def test_out_of_range_values_refused(build: object) -> None:
    with pytest.raises(FieldError):
        build()  # type: ignore[operator]


def test_unknown_codes_and_kinds_stay_ints() -> None:
    err = m.ErrorReply(0x7777, "new")
    assert m.ErrorReply.decode_payload(err.encode_payload()).code == 0x7777
    assert m.ErrorReply(5).code is m.ErrorCode.AUTH_REQUIRED
    ev = m.DeviceLogEvent(1, 2, 999, "")
    assert ev.kind == 999 and not isinstance(ev.kind, m.LogKind)


def test_decode_frame_errors() -> None:
    good = encode_frame(7, m.GetClock())
    with pytest.raises(FrameError, match="CRC"):
        decode_frame(_raw_frame(0x13, 7, b"", crc=1))
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(b"\x00" + cobs_encode(b"\x01\x02") + b"\x00")
    with pytest.raises(FrameError, match="more than one"):
        decode_frame(good + good)
    with pytest.raises(PayloadError, match="unknown message type"):
        decode_frame(_raw_frame(0x55, 7, b""))
    with pytest.raises(PayloadError, match="trailing"):
        decode_frame(_raw_frame(0x13, 7, b"\x00"))
    with pytest.raises(PayloadError, match="truncated"):
        decode_frame(_raw_frame(0x14, 7, b"\x00\x01"))
    with pytest.raises(PayloadError, match="UTF-8"):
        decode_frame(_raw_frame(0xFF, 7, b"\x00\x01\x01\xff"))
    with pytest.raises(PayloadError, match="boolean"):
        decode_frame(_raw_frame(0x17, 7, b"\x02"))
    with pytest.raises(PayloadError, match="padding"):
        decode_frame(_raw_frame(0x91, 7, b"a\x00b" + bytes(83)))
    with pytest.raises(FieldError):  # decodes structurally, but the value is invalid
        decode_frame(_raw_frame(0x18, 7, b"\x00\x00\x00\x00\x00\x00"))


def test_encode_refuses_oversized_payload_and_bad_ids() -> None:
    big = m.RecordingPage(
        1, tuple(m.RecordingInfo(b"n" * 1000 + str(i).encode(), 1, 0, 0) for i in range(5))
    )
    with pytest.raises(FieldError, match="exceeds"):
        encode_frame(1, big)
    with pytest.raises(FieldError):
        encode_frame(0x10000, m.Ok())


def test_decoder_counts_and_recovers() -> None:
    dec = FrameDecoder()
    good = encode_frame(9, m.GetBattery())
    stream = (
        b"\x13\x37garbage"  # line noise: its first COBS block runs past its end
        + _raw_frame(0x15, 1, b"", crc=0)  # CRC error
        + b"\x00\x03ab\x00"  # valid COBS, but 2 bytes is too short for a frame
        + b"\x00\x05ab\x00"  # COBS block runs past the end
        + _raw_frame(0x66, 2, b"")  # unknown type
        + _raw_frame(0x14, 3, b"")  # bad payload
        + b"\x01" * (MAX_ENCODED + 10)  # oversized, no delimiter
        + good
    )
    out = dec.feed(stream)
    assert out[-1] == Frame(9, m.GetBattery())
    rejected = [o for o in out if isinstance(o, Rejected)]
    assert [(r.request_id, r.type_id) for r in rejected] == [(2, 0x66), (3, 0x14)]
    s = dec.stats
    assert (s.crc_errors, s.short_frames, s.cobs_errors, s.oversized, s.rejected) == (
        1,
        1,
        2,
        1,
        2,
    )
    assert s.frames == 1


def test_oversized_frame_split_across_feeds() -> None:
    dec = FrameDecoder()
    for _ in range(20):
        assert dec.feed(b"\x01" * 1000) == []
    assert dec.stats.oversized == 1
    assert dec.feed(encode_frame(1, m.Ok())) == [Frame(1, m.Ok())]


def test_protocol_errors_share_one_base() -> None:
    for exc in (FrameError, PayloadError, FieldError):
        assert issubclass(exc, ProtocolError)
    assert issubclass(FieldError, ValueError)
