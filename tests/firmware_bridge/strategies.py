"""Hypothesis strategies producing every protocol message with valid field values."""

from __future__ import annotations

from hypothesis import strategies as st

from firmware_bridge import messages as m

_chars = st.characters(codec="utf-8", blacklist_characters="\x00")


def text(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(_chars, max_size=max_bytes).filter(lambda s: len(s.encode()) <= max_bytes)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, m.U32_MAX)
u64 = st.integers(0, m.U64_MAX)
times = st.integers(0, m.TIME_MAX)
auth = st.binary(min_size=m.AUTH_BYTES, max_size=m.AUTH_BYTES)
digest = st.binary(min_size=m.DIGEST_BYTES, max_size=m.DIGEST_BYTES)
_component = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"\x00" not in b and b"/" not in b and b not in (b".", b"..")
)
names = (
    st.lists(_component, min_size=1, max_size=6)
    .map(b"/".join)
    .filter(lambda n: len(n) <= m.NAME_MAX)
)

officers = st.builds(
    m.OfficerRecord,
    text(m.OFFICER_NO_WIDTH),
    text(m.OFFICER_NAME_WIDTH),
    text(m.UNIT_NO_WIDTH),
    text(m.UNIT_NAME_WIDTH),
)
recordings = st.builds(m.RecordingInfo, names, u64, times, times)
log_events = st.builds(m.DeviceLogEvent, u32, times, u16, text(m.DETAIL_MAX))
versions = st.integers(1, 255)

MESSAGES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    m.HelloRequest: st.tuples(versions, versions).map(lambda t: m.HelloRequest(min(t), max(t))),
    m.AuthStart: st.just(m.AuthStart()),
    m.AuthProve: st.builds(m.AuthProve, auth, auth),
    m.GetIdentity: st.just(m.GetIdentity()),
    m.GetOfficer: st.just(m.GetOfficer()),
    m.SetOfficer: st.builds(m.SetOfficer, officers),
    m.GetClock: st.just(m.GetClock()),
    m.SetClock: st.builds(m.SetClock, times),
    m.GetBattery: st.just(m.GetBattery()),
    m.GetStorage: st.just(m.GetStorage()),
    m.SetMassStorage: st.builds(m.SetMassStorage, st.booleans()),
    m.ListRecordings: st.builds(m.ListRecordings, u32, st.integers(1, 0xFFFF)),
    m.DeleteRecording: st.builds(m.DeleteRecording, names, u64, digest),
    m.GetEventLog: st.builds(m.GetEventLog, u32, st.integers(1, 0xFFFF)),
    m.Ok: st.just(m.Ok()),
    m.Hello: st.builds(
        m.Hello, versions, text(m.SHORT_TEXT_MAX), st.integers(256, 0xFFFF), st.booleans()
    ),
    m.AuthChallenge: st.builds(m.AuthChallenge, auth),
    m.AuthAccepted: st.builds(m.AuthAccepted, auth),
    m.Identity: st.builds(
        m.Identity,
        text(m.SERIAL_WIDTH),
        text(m.SHORT_TEXT_MAX),
        text(m.SHORT_TEXT_MAX),
        text(m.SHORT_TEXT_MAX),
    ),
    m.OfficerRecord: officers,
    m.ClockTime: st.builds(m.ClockTime, times),
    m.BatteryStatus: st.builds(
        m.BatteryStatus,
        st.integers(0, 100),
        u16,
        st.booleans(),
        st.integers(-32768, 32767).map(lambda t: t / 10),
        u32,
        st.integers(0, 100),
    ),
    m.StorageStatus: st.builds(m.StorageStatus, u64, u64, u32, st.booleans()),
    m.RecordingPage: st.builds(m.RecordingPage, u32, st.lists(recordings, max_size=3).map(tuple)),
    m.EventLogPage: st.builds(m.EventLogPage, u32, st.lists(log_events, max_size=3).map(tuple)),
    m.ErrorReply: st.builds(m.ErrorReply, u16, text(m.ERROR_TEXT_MAX)),
    m.GetFirmwareStatus: st.just(m.GetFirmwareStatus()),
    m.FirmwareBeginRequest: st.builds(
        m.FirmwareBeginRequest,
        st.binary(min_size=1, max_size=m.MANIFEST_WIRE_MAX),
        st.binary(min_size=m.SIGNATURE_BYTES, max_size=m.SIGNATURE_BYTES),
    ),
    m.FirmwareChunk: st.builds(
        m.FirmwareChunk, u64, u32, st.binary(min_size=1, max_size=m.FIRMWARE_CHUNK_MAX)
    ),
    m.FirmwareCommit: st.just(m.FirmwareCommit()),
    m.Reboot: st.just(m.Reboot()),
    m.FirmwareStatus: st.tuples(u64, u64).flatmap(
        lambda t: st.builds(
            m.FirmwareStatus,
            text(m.SHORT_TEXT_MAX),
            st.sampled_from(m.SLOTS),
            text(m.SHORT_TEXT_MAX),
            text(m.SHORT_TEXT_MAX),
            st.integers(0, 0xFF),
            digest,
            st.just(min(t)),
            st.just(max(t)),
        )
    ),
    m.FirmwareBegin: st.builds(m.FirmwareBegin, u64, st.integers(1, m.FIRMWARE_CHUNK_MAX)),
    m.FirmwareProgress: st.builds(m.FirmwareProgress, u64),
    m.FirmwareRefusal: st.builds(m.FirmwareRefusal, u16, u64, text(m.ERROR_TEXT_MAX)),
}

any_message = st.one_of(*MESSAGES.values())
