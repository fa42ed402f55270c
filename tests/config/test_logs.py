"""Structured logging: JSON lines, context fields, redaction of secrets and bytes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from agent.logs import REDACTED, log_context, setup_logging
from agent.settings import LoggingSettings


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "dock-agent":
            root.removeHandler(h)


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_with_context_and_extra(stream: io.StringIO) -> None:
    log = setup_logging(LoggingSettings(level="info", format="json"), stream=stream)
    log.debug("hidden")
    with log_context(recorder="BWC00001", bay="A1", session="s1"):
        log.info("offloaded %d files", 3, extra={"bytes_copied": 1024})
    log.warning("after")
    first, second = lines(stream)
    assert first["msg"] == "offloaded 3 files" and first["level"] == "info"
    assert (first["recorder"], first["bay"], first["session"]) == ("BWC00001", "A1", "s1")
    assert first["bytes_copied"] == 1024 and first["logger"] == "dock_agent"
    assert str(first["ts"]).endswith("+00:00")
    assert "bay" not in second and second["level"] == "warning"


def test_secrets_and_bytes_never_reach_the_log(stream: io.StringIO) -> None:
    log = setup_logging(LoggingSettings(level="debug", format="json"), stream=stream)
    footage = b"\x00\x00\x00\x18ftypmp42 secret footage"
    log.info("read %r", footage, extra={
        "fleet_secret": b"s3cr3t-value", "password": "hunter2", "mqtt": {"api_key": "k-123"},
        "chunk": footage, "key_file": "/etc/dock-agent/dock.key", "host_proof": "ab"})
    text = stream.getvalue()
    for leaked in ("s3cr3t", "hunter2", "k-123", "ftypmp42"):
        assert leaked not in text
    (entry,) = lines(stream)
    assert entry["password"] == REDACTED and entry["fleet_secret"] == REDACTED
    assert entry["mqtt"] == {"api_key": REDACTED}
    assert entry["chunk"] == f"<{len(footage)} bytes>"
    assert entry["msg"] == f"read '<{len(footage)} bytes>'"
    assert entry["key_file"] == "/etc/dock-agent/dock.key"  # a path, not key material


def test_context_is_task_local(stream: io.StringIO) -> None:
    buf = stream
    log = setup_logging(LoggingSettings(level="info", format="json"), stream=buf)

    async def session(bay: str) -> None:
        with log_context(bay=bay, recorder=f"R{bay}"):
            await asyncio.sleep(0)
            log.info("step")
            await asyncio.sleep(0)
            log.info("step")

    async def both() -> None:
        await asyncio.gather(session("1"), session("2"))

    asyncio.run(both())
    for entry in lines(buf):
        assert entry["recorder"] == f"R{entry['bay']}"
    assert len(lines(buf)) == 4


def test_text_format_and_exceptions(stream: io.StringIO) -> None:
    log = setup_logging(LoggingSettings(level="info", format="text"), stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        with log_context(bay="B2"):
            log.exception("copy failed", extra={"token": "t-1"})
    text = stream.getvalue()
    assert " ERROR   dock_agent: copy failed [bay=B2 token=[redacted]]" in text
    assert "ValueError: boom" in text and "t-1" not in text


def test_setup_twice_keeps_one_handler(stream: io.StringIO) -> None:
    setup_logging(LoggingSettings(), stream=stream)
    log = setup_logging(LoggingSettings(), stream=stream)
    log.info("once")
    assert len(lines(stream)) == 1


def test_unknown_context_field_is_an_error() -> None:
    with pytest.raises(TypeError), log_context(officer="x"):
        pass


# (no lone surrogate here: pytest's own log capture could not ship it between workers)
HOSTILE = "A\n2026-01-01T00:00:00.000+00:00 INFO    forged: x\x1b[2J\x85\u2028\u202e"


def test_text_log_escapes_recorder_strings(stream: io.StringIO) -> None:
    log = setup_logging(LoggingSettings(level="info", format="text"), stream=stream)
    with log_context(recorder=HOSTILE):
        log.info("officer %s docked", HOSTILE, extra={"file_name": HOSTILE})
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            log.exception("failed for %s", HOSTILE)
    out = stream.getvalue()
    records = [line for line in out.splitlines() if not line.startswith("    ")]
    assert len(records) == 2, out  # a traceback follows on indented lines only
    assert "\x1b" not in out and "\x85" not in out and "\u2028" not in out
    assert "A\\n2026-01-01T00:00:00.000+00:00 INFO    forged: x\\x1b[2J\\x85\\u2028\\u202e" \
        in records[0]


def test_json_log_keeps_raw_values_on_one_line(stream: io.StringIO) -> None:
    log = setup_logging(LoggingSettings(level="info", format="json"), stream=stream)
    log.info("x", extra={"officer_name": HOSTILE})
    (line,) = stream.getvalue().split("\n")[:-1]
    assert len(line.splitlines()) == 1
    assert not any(ch in line for ch in "\x1b\x85\u2028\u202e")  # escaped, same JSON value
    assert json.loads(line)["officer_name"] == HOSTILE


def test_printable_escapes_only_what_it_must() -> None:
    from agent.printable import is_printable, printable

    assert printable("王芳 Li-Wei_01 (U7)") == "王芳 Li-Wei_01 (U7)"
    assert printable("a\tb\rc\nd\x00\x7f\x9b") == "a\\tb\\rc\\nd\\x00\\x7f\\x9b"
    assert printable("\u2029\u2066\u200f") == "\\u2029\\u2066\\u200f"
    assert printable(None) == "" and printable(42) == "42"
    assert printable(b"bad\xff".decode("utf-8", "surrogateescape")) == "bad\\xff"
    assert is_printable(printable(HOSTILE))
