"""The screen's message catalogues (gettext .po files) and the choice of language.

The catalogues live beside this module as `locale/<lang>/LC_MESSAGES/dock-screen.po` and
are read with a small parser of the .po subset the project writes (msgid/msgstr with
continuation lines, comments, no plurals: the screen formats numbers itself). Message ids
are symbolic (`verdict.READY`) because the browser looks them up from data codes.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

DOMAIN = "dock-screen"
LANGUAGES = ("en", "zh_CN")
DEFAULT = "en"
LOCALE_DIR = Path(__file__).parent / "locale"
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


class CatalogueError(Exception):
    """A message catalogue is missing or malformed."""


def _unquote(text: str, where: str) -> str:
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        raise CatalogueError(f"{where}: expected a quoted string, got {text!r}")
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text[1:-1])


def parse_po(text: str, name: str = "<po>") -> dict[str, str]:
    """msgid -> msgstr; the header entry (empty msgid) and untranslated entries are left out."""
    out: dict[str, str] = {}
    key: str | None = None
    parts: dict[str, list[str]] = {}

    def flush() -> None:
        if "msgid" in parts:
            if "msgstr" not in parts:
                raise CatalogueError(f"{name}: msgid {''.join(parts['msgid'])!r} has no msgstr")
            msgid, msgstr = "".join(parts["msgid"]), "".join(parts["msgstr"])
            if msgid and msgstr:
                out[msgid] = msgstr
        parts.clear()

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{name}:{lineno}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("msgid "):
            flush()
            key = "msgid"
            parts[key] = [_unquote(line[6:].strip(), where)]
        elif line.startswith("msgstr "):
            key = "msgstr"
            parts[key] = [_unquote(line[7:].strip(), where)]
        elif line.startswith('"') and key is not None:
            parts[key].append(_unquote(line, where))
        else:
            raise CatalogueError(f"{where}: cannot read {line[:40]!r}")
    flush()
    return out


@cache
def catalogue(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise CatalogueError(f"no catalogue for language {lang!r} (have: {', '.join(LANGUAGES)})")
    path = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"cannot read {path}: {exc}") from exc
    return parse_po(text, str(path))


def _match(tag: str) -> str | None:
    tag = tag.strip().lower().replace("_", "-")
    if tag == "zh" or tag.startswith("zh-"):
        return "zh_CN"  # the only Chinese catalogue is Simplified
    if tag == "en" or tag.startswith("en-"):
        return "en"
    return None


def negotiate(accept_language: str | None) -> str | None:
    """The best catalogue for an Accept-Language header (RFC 9110 q-values), or None."""
    if not accept_language:
        return None
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(accept_language.split(",")[:32]):
        tag, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # unreadable weight: not a language the browser asked for
        lang = _match(tag)
        if lang is not None and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def choose(configured: str, requested: str | None, accept_language: str | None) -> str:
    """An explicit choice on the page wins, then the configured language, then the browser's
    Accept-Language; English when nothing matches."""
    if requested in LANGUAGES:
        return requested
    if configured in LANGUAGES:
        return configured
    return negotiate(accept_language) or DEFAULT
