"""The screen's message catalogues: complete in both languages, and language choice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.compliance import readiness
from agent.screen import i18n
from agent.store.faults import FaultCode

JS = Path(i18n.__file__).parent / "static" / "screen.js"


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", text))


def test_catalogues_have_the_same_messages_and_placeholders() -> None:
    en, zh = i18n.catalogue("en"), i18n.catalogue("zh_CN")
    assert set(en) == set(zh)
    for key in en:
        assert placeholders(en[key]) == placeholders(zh[key]), key


def test_every_message_the_page_uses_and_every_code_it_shows_is_translated() -> None:
    en = i18n.catalogue("en")
    js = JS.read_text(encoding="utf-8")
    literal = set(re.findall(r'\bt\("([\w.]+)"[,)]', js))
    assert literal and literal <= set(en), literal - set(en)
    source = Path(readiness.__file__).read_text(encoding="utf-8")
    for code in set(re.findall(r'Reason\(\s*"(\w+)"', source)):
        assert f"reason.{code}" in en, code
    for verdict in readiness.Verdict:
        assert f"verdict.{verdict.value}" in en
    for fault in FaultCode:
        assert f"fault.{fault.value}" in en, fault
    for lang in i18n.LANGUAGES:
        assert f"lang.{lang}" in en


@pytest.mark.parametrize(("header", "want"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"),
    ("en-US,en;q=0.9,zh-CN;q=0.95", "en"),
    ("fr-FR, zh-Hans;q=0.5, en;q=0.4", "zh_CN"),
    ("de, fr;q=0.8", None),
    ("zh;q=0, en;q=0.1", "en"),
    ("", None),
    ("en;q=bogus, zh-TW", "zh_CN"),
])
def test_accept_language(header: str, want: str | None) -> None:
    assert i18n.negotiate(header) == want


def test_choice_order() -> None:
    assert i18n.choose("auto", None, "zh-CN") == "zh_CN"
    assert i18n.choose("en", None, "zh-CN") == "en"  # configured beats the browser
    assert i18n.choose("en", "zh_CN", "en") == "zh_CN"  # chosen on the page beats both
    assert i18n.choose("auto", "xx", "de") == "en"


def test_po_parser_reads_continuations_and_escapes_and_rejects_junk() -> None:
    text = 'msgid ""\nmsgstr "Language: x\\n"\n\n# c\nmsgid "a"\nmsgstr "say \\"hi\\" "\n"there"\n'
    assert i18n.parse_po(text) == {"a": 'say "hi" there'}
    with pytest.raises(i18n.CatalogueError, match="cannot read"):
        i18n.parse_po('msgid "a"\nmsgstr "b"\nbogus\n')
    with pytest.raises(i18n.CatalogueError, match="no msgstr"):
        i18n.parse_po('msgid "a"\n')
    with pytest.raises(i18n.CatalogueError, match="no catalogue"):
        i18n.catalogue("fr")
