"""ClientConnection: the host's protocol decisions, tested with no I/O and no clock."""

from __future__ import annotations

import pytest
from bridge_helpers import raw_frame

from firmware_bridge import auth
from firmware_bridge import messages as m
from firmware_bridge.codec import decode_frame, encode_frame
from firmware_bridge.connection import Answered, ClientConnection, Failed, Transmit
from firmware_bridge.errors import (
    AuthRefused,
    DeviceError,
    FirmwareRefused,
    LinkClosed,
    LinkTimeout,
    PayloadError,
    ProtocolError,
)

IDENTITY = m.Identity("DA000042", "BWC-7", "rev C", "2.4.1")


def sent(step: Transmit | Failed) -> tuple[int, m.Message]:
    assert isinstance(step, Transmit)
    frame = decode_frame(step.data)
    return frame.request_id, frame.message


def test_a_request_and_its_reply() -> None:
    conn = ClientConnection(timeout=2.0)
    step = conn.send(m.GetIdentity(), now=100.0)
    assert (step.attempt, step.deadline) == (1, 102.0)
    rid, msg = sent(step)
    assert msg == m.GetIdentity()
    reply = encode_frame(rid, IDENTITY)
    assert conn.receive_data(reply[:5]) is None  # byte stream: nothing yet
    assert conn.receive_data(reply[5:]) == Answered(IDENTITY)
    assert conn.stats.requests == 1 and conn.stats.unexpected_replies == 0


def test_idempotent_requests_retry_under_new_ids_then_give_up() -> None:
    conn = ClientConnection(timeout=1.0, retries=2)
    first, _ = sent(conn.send(m.GetBattery(), now=0.0))
    second = conn.timed_out(now=1.0)
    rid2, msg = sent(second)
    assert rid2 != first and msg == m.GetBattery() and second.attempt == 2
    late = m.BatteryStatus(50, 3900, True, 20.0, 1, 99)
    assert conn.receive_data(encode_frame(first, late)) is None  # late reply to attempt 1
    assert conn.stats.unexpected_replies == 1
    sent(conn.timed_out(now=2.0))
    outcome = conn.timed_out(now=3.0)
    assert isinstance(outcome, Failed) and isinstance(outcome.error, LinkTimeout)
    assert "3 attempt(s)" in str(outcome.error)
    assert (conn.stats.retries, conn.stats.timeouts) == (2, 3)


@pytest.mark.parametrize("request_", [m.SetClock(1), m.FirmwareCommit(), m.Reboot(),
                                      m.DeleteRecording(b"a", 1, bytes(32))])
def test_requests_that_are_not_idempotent_are_never_resent(request_: m.Request[m.Ok]) -> None:
    conn = ClientConnection(retries=5)
    conn.send(request_, now=0.0)
    outcome = conn.timed_out(now=500.0)
    assert isinstance(outcome, Failed) and isinstance(outcome.error, LinkTimeout)


def test_slow_commands_get_their_declared_minimum_timeout() -> None:
    conn = ClientConnection(timeout=2.0)
    assert conn.send(m.SetMassStorage(True), now=0.0).deadline == 10.0
    conn.connection_lost("test")
    conn = ClientConnection(timeout=2.0)
    assert conn.send(m.FirmwareCommit(), now=0.0).deadline == 120.0


@pytest.mark.parametrize(("request_", "reply", "error"), [
    (m.GetIdentity(), m.ErrorReply(m.ErrorCode.AUTH_REQUIRED), AuthRefused),
    (m.GetIdentity(), m.ErrorReply(m.ErrorCode.BUSY, "recording"), DeviceError),
    (m.FirmwareBeginRequest(b"{}", bytes(64)), m.ErrorReply(m.ErrorCode.FIRMWARE_MODEL),
     FirmwareRefused),
    (m.FirmwareChunk(0, 0, b"x"), m.FirmwareRefusal(m.ErrorCode.FIRMWARE_CRC, 4064, "crc"),
     FirmwareRefused),
    (m.GetIdentity(), m.Ok(), ProtocolError),  # the wrong reply type
])
def test_error_replies_map_to_exceptions(request_: m.Request[m.Identity], reply: m.Reply,
                                         error: type[Exception]) -> None:
    conn = ClientConnection()
    rid, _ = sent(conn.send(request_, now=0.0))
    outcome = conn.receive_data(encode_frame(rid, reply))
    assert isinstance(outcome, Failed) and type(outcome.error) is error
    if isinstance(reply, m.FirmwareRefusal):
        assert isinstance(outcome.error, FirmwareRefused)
        assert outcome.error.durable_offset == 4064
    assert sent(conn.send(m.GetClock(), now=1.0))[1] == m.GetClock()  # ready for the next


def test_a_request_type_or_a_bad_payload_as_the_reply_fails_the_request() -> None:
    conn = ClientConnection()
    rid, _ = sent(conn.send(m.GetClock(), now=0.0))
    outcome = conn.receive_data(encode_frame(rid, m.GetClock()))
    assert isinstance(outcome, Failed) and isinstance(outcome.error, ProtocolError)
    for type_id, payload in ((0x93, b"\x00"), (0x7E, b"")):  # truncated, unknown type
        rid, _ = sent(conn.send(m.GetClock(), now=0.0))
        outcome = conn.receive_data(raw_frame(type_id, rid, payload))
        assert isinstance(outcome, Failed) and isinstance(outcome.error, PayloadError)


def test_connection_lost_fails_the_outstanding_request_and_every_later_one() -> None:
    conn = ClientConnection()
    assert conn.connection_lost("idle") is None
    conn = ClientConnection()
    conn.send(m.GetStorage(), now=0.0)
    outcome = conn.connection_lost("end of file")
    assert isinstance(outcome, Failed) and isinstance(outcome.error, LinkClosed)
    with pytest.raises(LinkClosed, match="end of file"):
        conn.send(m.GetStorage(), now=1.0)


def test_one_request_at_a_time() -> None:
    conn = ClientConnection()
    conn.send(m.GetStorage(), now=0.0)
    with pytest.raises(RuntimeError):
        conn.send(m.GetClock(), now=0.0)


def test_request_ids_wrap_and_skip_zero() -> None:
    conn = ClientConnection()
    conn._next_id = 0xFFFF
    rid, _ = sent(conn.send(m.GetStorage(), now=0.0))
    rid2, _ = sent(conn.timed_out(now=3.0))
    assert (rid, rid2) == (0xFFFF, 1)


def test_hello_and_mutual_authentication() -> None:
    conn = ClientConnection()
    assert conn.hello_request() == m.HelloRequest(m.MIN_PROTOCOL_VERSION, m.PROTOCOL_VERSION)
    with pytest.raises(ProtocolError, match="unsupported version"):
        conn.hello_received(m.Hello(9, "BWC-7"))
    assert conn.hello_received(m.Hello(1, "BWC-7")) == conn.hello_info
    secret, challenge, nonce = b"fleet secret", bytes(range(32)), bytes(range(32, 64))
    prove = conn.auth_prove(m.AuthChallenge(challenge), secret, nonce)
    assert prove == m.AuthProve(nonce, auth.host_proof(secret, challenge, nonce))
    conn.auth_accepted(m.AuthAccepted(auth.device_proof(secret, challenge, nonce)))
    conn.auth_prove(m.AuthChallenge(challenge), secret, nonce)
    with pytest.raises(AuthRefused, match="prove"):  # an impostor recorder
        conn.auth_accepted(m.AuthAccepted(auth.device_proof(b"other", challenge, nonce)))
    with pytest.raises(AuthRefused):  # no proof outstanding: nothing to accept
        conn.auth_accepted(m.AuthAccepted(auth.device_proof(secret, challenge, nonce)))


def test_an_abandoned_request_frees_the_connection_and_its_late_reply_is_dropped() -> None:
    conn = ClientConnection()
    rid, _ = sent(conn.send(m.GetIdentity(), now=0.0))
    conn.abandon()
    rid2, _ = sent(conn.send(m.GetClock(), now=1.0))
    assert conn.receive_data(encode_frame(rid, IDENTITY)) is None
    assert conn.stats.unexpected_replies == 1
    assert conn.receive_data(encode_frame(rid2, m.ClockTime(7))) == Answered(m.ClockTime(7))
