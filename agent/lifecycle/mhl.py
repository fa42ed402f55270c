"""ASC MHL v2 manifests (the ASC Media Hash List, chained hash lists): pure encoding.

A package folder carries an `ascmhl/` history: one generation file
`NNNN_<folder>_<YYYY-MM-DD>_<HHMMSS>Z.mhl` listing each file's path, size and hash, and
`ascmhl_chain.xml` naming every generation with its C4 id (SMPTE ST 2114: base58 of
SHA-512). We write SHA-1, a hash type the standard defines, so any ASC MHL tool can
re-verify the package; BLAKE3 (our custody hash) is carried by the signed statement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

HISTORY_DIR = "ascmhl"
CHAIN_FILE = "ascmhl_chain.xml"
C4_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass(frozen=True)
class MhlEntry:
    relpath: str  # POSIX path relative to the package root
    size: int
    sha1_hex: str



def escape(text: str) -> str:
    """XML character data escaped. `xml.sax.saxutils` is imported on first use: it pulls
    in urllib and http.client, which the agent would otherwise carry in memory all the
    time for the rare export manifest."""
    from xml.sax.saxutils import escape as sax_escape

    return sax_escape(text)

def c4_id(data: bytes) -> str:
    """The C4 id of `data`: "c4" + 88 base58 digits of its SHA-512."""
    n = int.from_bytes(hashlib.sha512(data).digest(), "big")
    digits = ""
    while n:
        n, rem = divmod(n, 58)
        digits = C4_ALPHABET[rem] + digits
    return "c4" + digits.rjust(88, "1")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def generation_name(folder: str, moment: dt.datetime, seq: int = 1) -> str:
    stamp = moment.astimezone(dt.UTC).strftime("%Y-%m-%d_%H%M%SZ")
    return f"{seq:04d}_{folder}_{stamp}.mhl"


def hashlist_xml(entries: Sequence[MhlEntry], *, moment: dt.datetime, hostname: str,
                 tool_version: str) -> bytes:
    """One generation (`process` "transfer": the files were copied off the dock's store)."""
    when = _iso(moment)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<hashlist version="2.0" xmlns="urn:ASC:MHL:v2.0">',
        "  <creatorinfo>",
        f"    <creationdate>{when}</creationdate>",
        f"    <hostname>{escape(hostname)}</hostname>",
        f'    <tool version="{escape(tool_version)}">dock-agent</tool>',
        "  </creatorinfo>",
        "  <processinfo>",
        "    <process>transfer</process>",
        "    <ignore>",
        "      <pattern>.DS_Store</pattern>",
        f"      <pattern>{HISTORY_DIR}</pattern>",
        f"      <pattern>{HISTORY_DIR}/</pattern>",
        "    </ignore>",
        "  </processinfo>",
        "  <hashes>",
    ]
    for e in sorted(entries, key=lambda x: x.relpath):
        lines += [
            "    <hash>",
            f'      <path size="{e.size}">{escape(e.relpath)}</path>',
            f'      <sha1 action="original" hashdate="{when}">{e.sha1_hex}</sha1>',
            "    </hash>",
        ]
    lines += ["  </hashes>", "</hashlist>", ""]
    return "\n".join(lines).encode("utf-8")


def chain_xml(generations: Sequence[tuple[str, bytes]]) -> bytes:
    """The chain file over (generation file name, its exact bytes), oldest first."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<ascmhldirectory xmlns="urn:ASC:MHL:DIRECTORY:v2.0">']
    for i, (name, data) in enumerate(generations, start=1):
        lines += [f'  <hashlist sequencenr="{i}">', f"    <path>{escape(name)}</path>",
                  f"    <c4>{c4_id(data)}</c4>", "  </hashlist>"]
    lines += ["</ascmhldirectory>", ""]
    return "\n".join(lines).encode("utf-8")


def parse_hashlist(data: bytes) -> dict[str, tuple[int, str]]:
    """relpath -> (size, sha1) from a generation we wrote (used to re-verify a package)."""
    import xml.etree.ElementTree as ET

    ns = {"m": "urn:ASC:MHL:v2.0"}
    root = ET.fromstring(data)  # noqa: S314 - our own file, read back for verification
    out: dict[str, tuple[int, str]] = {}
    for h in root.iterfind("m:hashes/m:hash", ns):
        path = h.find("m:path", ns)
        sha1 = h.find("m:sha1", ns)
        if path is None or sha1 is None or path.text is None or sha1.text is None:
            continue
        out[path.text] = (int(path.get("size", "-1")), sha1.text.strip())
    return out
