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
