"""DeviceEndpoint (sans-I/O): session gate, authentication, dispatch, error replies."""

from __future__ import annotations

import itertools

import blake3
import pytest
from bridge_helpers import SECRET, MemoryRecorder, raw_frame
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import names

from firmware_bridge import auth
from firmware_bridge import messages as m
from firmware_bridge.codec import decode_frame, encode_frame
from hw_sim.endpoint import DeviceEndpoint, DeviceFault

_ids = itertools.count(1)


def ask(ep: DeviceEndpoint, msg: m.Message) -> m.Message:
    rid = next(_ids) & 0xFFFF
    out = ep.feed(encode_frame(rid, msg))
    assert len(out) == 1
    frame = decode_frame(out[0])
    assert frame.request_id == rid
    return frame.message


def login(ep: DeviceEndpoint, secret: bytes = SECRET) -> m.Message:
    assert isinstance(ask(ep, m.HelloRequest()), m.Hello)
    ch = ask(ep, m.AuthStart())
    assert isinstance(ch, m.AuthChallenge)
    nonce = b"N" * 32
    return ask(ep, m.AuthProve(nonce, auth.host_proof(secret, ch.challenge, nonce)))


def code_of(reply: m.Message) -> int:
    assert isinstance(reply, m.ErrorReply), reply
    return reply.code


@pytest.fixture
def ep(recorder: MemoryRecorder) -> DeviceEndpoint:
    return DeviceEndpoint(recorder, SECRET)


def test_hello_first_then_auth_then_commands(ep: DeviceEndpoint, recorder: MemoryRecorder) -> None:
    assert code_of(ask(ep, m.GetIdentity())) == m.ErrorCode.HELLO_REQUIRED
    assert code_of(ask(ep, m.AuthStart())) == m.ErrorCode.HELLO_REQUIRED
    hello = ask(ep, m.HelloRequest())
    assert hello == m.Hello(1, "BWC-7", m.MAX_PAYLOAD, True)
    for req in (m.GetIdentity(), m.SetClock(5), m.DeleteRecording(b"a", 1, bytes(32))):
        assert code_of(ask(ep, req)) == m.ErrorCode.AUTH_REQUIRED
    assert recorder.calls == ["identity"]  # only hello's model lookup reached the handler
    assert isinstance(login(ep), m.AuthAccepted)
    assert ask(ep, m.GetIdentity()) == recorder.ident


def test_device_proof_matches(ep: DeviceEndpoint) -> None:
    ask(ep, m.HelloRequest())
    ch = ask(ep, m.AuthStart())
    assert isinstance(ch, m.AuthChallenge)
    nonce = bytes(range(32))
    ok = ask(ep, m.AuthProve(nonce, auth.host_proof(SECRET, ch.challenge, nonce)))
    assert ok == m.AuthAccepted(auth.device_proof(SECRET, ch.challenge, nonce))
    assert auth.device_proof(SECRET, ch.challenge, nonce) != auth.host_proof(
        SECRET, ch.challenge, nonce
    )


def test_wrong_secret_refused_and_challenge_single_use(ep: DeviceEndpoint) -> None:
    assert code_of(login(ep, b"not the fleet secret")) == m.ErrorCode.AUTH_FAILED
    assert ep.stats.auth_failures == 1
    assert code_of(ask(ep, m.GetIdentity())) == m.ErrorCode.AUTH_REQUIRED
    # A proof without a fresh challenge (replay) is refused.
    assert code_of(ask(ep, m.AuthProve(b"N" * 32, b"P" * 32))) == m.ErrorCode.NO_CHALLENGE


def test_replayed_proof_refused(ep: DeviceEndpoint) -> None:
    ask(ep, m.HelloRequest())
    ch = ask(ep, m.AuthStart())
    assert isinstance(ch, m.AuthChallenge)
    prove = m.AuthProve(b"N" * 32, auth.host_proof(SECRET, ch.challenge, b"N" * 32))
    assert isinstance(ask(ep, prove), m.AuthAccepted)
    ask(ep, m.HelloRequest())  # new session
    ask(ep, m.AuthStart())  # new challenge: the old proof no longer fits
    assert code_of(ask(ep, prove)) == m.ErrorCode.AUTH_FAILED


def test_hello_and_reset_drop_authentication(ep: DeviceEndpoint) -> None:
    login(ep)
    ask(ep, m.HelloRequest())
    assert code_of(ask(ep, m.GetBattery())) == m.ErrorCode.AUTH_REQUIRED
    login(ep)
    ep.reset()
    assert code_of(ask(ep, m.GetBattery())) == m.ErrorCode.HELLO_REQUIRED


def test_version_negotiation(recorder: MemoryRecorder) -> None:
    ep = DeviceEndpoint(recorder, SECRET, min_version=1, max_version=3)
    assert isinstance(h := ask(ep, m.HelloRequest(2, 9)), m.Hello) and h.protocol_version == 3
    assert code_of(ask(ep, m.HelloRequest(4, 9))) == m.ErrorCode.UNSUPPORTED_VERSION
    assert ep.version is None
    assert code_of(ask(ep, m.GetClock())) == m.ErrorCode.HELLO_REQUIRED


def test_unknown_and_malformed_requests_get_error_replies(ep: DeviceEndpoint) -> None:
    out = ep.feed(raw_frame(0x42, 77, b"whatever"))
    f = decode_frame(out[0])
    assert f.request_id == 77 and code_of(f.message) == m.ErrorCode.UNKNOWN_COMMAND
    out = ep.feed(raw_frame(m.SetClock.TYPE_ID, 78, b"\x01"))
    f = decode_frame(out[0])
    assert f.request_id == 78 and code_of(f.message) == m.ErrorCode.MALFORMED
    assert code_of(ask(ep, m.Ok())) == m.ErrorCode.UNKNOWN_COMMAND  # a reply sent as request
    assert ep.feed(b"\x00\x13noise\x00") == []  # line noise gets no reply at all


def test_handler_faults_and_crashes(ep: DeviceEndpoint, recorder: MemoryRecorder) -> None:
    login(ep)
    digest = blake3.blake3(recorder.files[b"DCIM/100REC/V00000.MP4"]).digest()
    r = ask(ep, m.DeleteRecording(b"DCIM/100REC/V00000.MP4", 999, digest))
    assert code_of(r) == m.ErrorCode.MISMATCH
    r = ask(ep, m.DeleteRecording(b"nope.mp4", 1000, digest))
    assert code_of(r) == m.ErrorCode.NOT_FOUND
    assert ask(ep, m.DeleteRecording(b"DCIM/100REC/V00000.MP4", 1000, digest)) == m.Ok()
    assert b"DCIM/100REC/V00000.MP4" not in recorder.files

    def boom() -> m.BatteryStatus:
        raise RuntimeError("sensor bus stuck")

    recorder.battery = boom  # type: ignore[method-assign]
    r = ask(ep, m.GetBattery())
    assert code_of(r) == m.ErrorCode.INTERNAL and ep.stats.handler_crashes == 1

    def busy(on: bool) -> None:
        raise DeviceFault(m.ErrorCode.BUSY, "recording in progress")

    recorder.set_mass_storage = busy  # type: ignore[method-assign]
    r = ask(ep, m.SetMassStorage(True))
    assert r == m.ErrorReply(m.ErrorCode.BUSY, "recording in progress")

    def bad_code(record: m.OfficerRecord) -> None:
        raise DeviceFault(0x12345, "out of range")

    recorder.set_officer = bad_code  # type: ignore[method-assign]
    r = ask(ep, m.SetOfficer(m.OfficerRecord("", "", "", "")))
    assert code_of(r) == m.ErrorCode.INTERNAL

    recorder.get_officer = lambda: "not a record"  # type: ignore[assignment,method-assign,return-value]
    assert code_of(ask(ep, m.GetOfficer())) == m.ErrorCode.INTERNAL


def test_pages_are_trimmed_to_fit_one_frame(ep: DeviceEndpoint) -> None:
    rec = MemoryRecorder(n_files=0)
    for i in range(300):
        rec.add_file(b"d/" + b"x" * 1000 + b"%d" % i, b"")
    ep = DeviceEndpoint(rec, SECRET)
    login(ep)
    page = ask(ep, m.ListRecordings(0, 1000))
    assert isinstance(page, m.RecordingPage)
    assert page.total == 300 and 1 <= len(page.entries) < 5
    page2 = ask(ep, m.ListRecordings(0, 2))
    assert isinstance(page2, m.RecordingPage) and len(page2.entries) == 2


def test_commands_reach_the_handler(ep: DeviceEndpoint, recorder: MemoryRecorder) -> None:
    login(ep)
    rec = m.OfficerRecord("0012345", "王五", "330100", "市卫生监督所")
    assert ask(ep, m.SetOfficer(rec)) == m.Ok()
    assert ask(ep, m.GetOfficer()) == rec
    assert ask(ep, m.SetClock(1_800_000_000_123)) == m.Ok()
    assert ask(ep, m.GetClock()) == m.ClockTime(1_800_000_000_123)
    assert ask(ep, m.SetMassStorage(True)) == m.Ok() and recorder.mass_storage
    assert isinstance(ask(ep, m.GetStorage()), m.StorageStatus)
    page = ask(ep, m.GetEventLog(1, 1))
    assert isinstance(page, m.EventLogPage) and [e.index for e in page.entries] == [1]


def test_hello_survives_a_broken_identity(recorder: MemoryRecorder) -> None:
    recorder.identity = lambda: None  # type: ignore[assignment,method-assign,return-value]
    ep = DeviceEndpoint(recorder, SECRET)
    assert ask(ep, m.HelloRequest()) == m.Hello(1, "")


def test_empty_secret_refused(recorder: MemoryRecorder) -> None:
    with pytest.raises(ValueError):
        DeviceEndpoint(recorder, b"")


@settings(max_examples=40, deadline=None)
@given(st.lists(names, min_size=1, max_size=40, unique=True), st.integers(1, 0xFFFF))
def test_any_listing_pages_within_one_frame(file_names: list[bytes], limit: int) -> None:
    rec = MemoryRecorder(n_files=0)
    for n in file_names:
        rec.add_file(n, b"")
    ep = DeviceEndpoint(rec, SECRET)
    login(ep)
    seen: list[bytes] = []
    while True:
        page = ask(ep, m.ListRecordings(len(seen), limit))  # ask() decodes the real frame
        assert isinstance(page, m.RecordingPage) and page.total == len(file_names)
        seen += [e.name for e in page.entries]
        if not page.entries or len(seen) >= page.total:
            break
    assert seen == sorted(file_names)
