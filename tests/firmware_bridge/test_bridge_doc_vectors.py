"""docs/protocol.md and the codec must agree byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from firmware_bridge import messages as m
from firmware_bridge.codec import Frame, FrameDecoder, decode_frame, encode_frame
from firmware_bridge.vectors import VECTORS, parse_vectors, render_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_contains_generated_section_verbatim(doc: str) -> None:
    assert render_markdown() in doc, "regenerate: python -m firmware_bridge.vectors"


def test_doc_vectors_decode_and_encode_exactly(doc: str) -> None:
    found = parse_vectors(doc)
    assert list(found) == [name for name, _, _ in VECTORS]
    for name, rid, msg in VECTORS:
        assert decode_frame(found[name]) == Frame(rid, msg), name  # type: ignore[arg-type]
        assert encode_frame(rid, msg) == found[name], name
    # And as one stream through the incremental decoder.
    dec = FrameDecoder()
    assert dec.feed(b"".join(found.values())) == [Frame(r, x) for _, r, x in VECTORS]  # type: ignore[arg-type]


def test_every_message_type_has_a_vector() -> None:
    assert {type(msg) for _, _, msg in VECTORS} == set(m.MESSAGE_TYPES.values())


def test_every_type_and_error_code_is_documented(doc: str) -> None:
    for type_id, cls in m.MESSAGE_TYPES.items():
        assert f"| 0x{type_id:02X} | {cls.__name__} |" in doc, cls.__name__
    for code in m.ErrorCode:
        assert f"| 0x{code.value:04X} | {code.name} |" in doc, code.name
    flat = " ".join(doc.split())
    for kind in m.LogKind:
        assert f"{kind.value} {kind.name.lower().replace('_', ' ')}" in flat, kind.name


def test_parse_vectors_would_notice_a_changed_byte(doc: str) -> None:
    name, rid, msg = VECTORS[0]
    tampered = doc.replace(encode_frame(rid, msg).hex(" "), "00 02 01 08 01 01 01 94 9c b5 4e 00")
    assert parse_vectors(tampered)[name] != encode_frame(rid, msg)


def test_message_tables_match_the_declarations(doc: str) -> None:
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if re.fullmatch(r"0x[0-9A-F]{2}", cells[0]):
            rows[cells[1]] = cells[2:]
    for cls in m.MESSAGE_TYPES.values():
        payload, *reply = rows[cls.__name__]
        if issubclass(cls, m.Request):
            assert reply[0].split()[0] == cls.REPLY.__name__, cls.__name__
        written = re.sub(r"(?<!×) \([^()]*\)", "", payload.split("`")[1] if "`" in payload
                         else payload.split(" (")[0])
        assert written == (cls.spelling() or "—"), cls.__name__
