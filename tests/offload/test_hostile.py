"""Hostile recorder content: refused with a reason, or stored under a safe name."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.offload import FileProblem, Offloader
from agent.offload.errors import SourceRefusedError
from agent.offload.walk import open_source, scan, unsafe_name

from .offload_helpers import check_store_invariants, ctx, make_file, rows


def _reasons(summary_refused: list[FileProblem]) -> dict[bytes, str]:
    return {p.name: p.reason for p in summary_refused}


async def test_special_files_refused_with_reasons(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path,
    tmp_path: Path,
) -> None:
    d = source / "DCIM" / "100BWC"
    good = make_file(source, "DCIM/100BWC/GOOD.MP4", 1000)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not footage")
    os.symlink(secret, d / "link_out.MP4")
    os.symlink("../../../../../../etc/hostname", d / "rel_out.MP4")
    os.symlink("/", d / "escape_dir")
    os.mkfifo(d / "fifo.MP4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.MP4"))
    if os.geteuid() == 0:
        os.mknod(d / "dev.MP4", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    s = await make_offloader().offload(ctx(), source)
    sock.close()
    assert s.outcome == "complete"
    assert [f.name for f in s.stored] == [b"DCIM/100BWC/GOOD.MP4"]
    reasons = _reasons(s.refused)
    p = b"DCIM/100BWC/"
    assert reasons[p + b"link_out.MP4"] == "symlink"
    assert reasons[p + b"rel_out.MP4"] == "symlink"
    assert reasons[p + b"escape_dir"] == "symlink"
    assert reasons[p + b"fifo.MP4"] == "fifo"
    assert reasons[p + b"sock.MP4"] == "socket"
    if os.geteuid() == 0:
        assert reasons[p + b"dev.MP4"] == "device node"
    index = check_store_invariants(db_path, store)
    assert len(index) == 1 and (store / index[0]["stored_relpath"]).read_bytes() == good
    assert secret.read_bytes() == b"not footage"


async def test_footage_dir_symlink_refused(
    make_offloader: Callable[..., Offloader], source: Path, tmp_path: Path, db_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    make_file(elsewhere, "X.MP4", 10)
    os.symlink(elsewhere, source / "DCIM")
    s = await make_offloader().offload(ctx(), source)
    assert s.stored == [] and _reasons(s.refused) == {b"DCIM": "footage directory is a symlink"}
    assert rows(db_path, "SELECT * FROM evidence_files") == []


async def test_odd_names_stored_safely_with_original_bytes(
    make_offloader: Callable[..., Offloader], source: Path, store: Path, db_path: Path
) -> None:
    names = [
        b"DCIM/..MP4",  # dot-dot lookalike
        b"DCIM/.hidden.MP4",
        b"DCIM/bad\xff\xfename.MP4",  # not UTF-8
        b"DCIM/" + b"A" * 251 + b".MP4",  # 255 bytes, the filesystem maximum
        b"DCIM/back\\slash\x01ctl.MP4",
    ]
    data = {n: make_file(source, n, 100 + i) for i, n in enumerate(names)}
    s = await make_offloader().offload(ctx(), source)
    assert s.refused == [] and len(s.stored) == len(names)
    index = check_store_invariants(db_path, store)
    seen_paths = set()
    for r in index:
        original = bytes(r["source_name"])
        rel = r["stored_relpath"]
        leaf = rel.rsplit("/", 1)[1]
        assert (store / rel).read_bytes() == data[original]
        assert not leaf.startswith(".") and "\\" not in leaf and len(leaf.encode()) <= 255
        assert leaf.isprintable()
        seen_paths.add(rel)
    assert len(seen_paths) == len(names)
    # deterministic: the same names give the same stored names in another store
    assert {f.stored_relpath for f in s.stored} == seen_paths


async def test_hostile_entries_from_the_simulator(
    make_offloader: Callable[..., Offloader], tmp_path: Path, store: Path, db_path: Path
) -> None:
    """The simulator's own hostile set: every entry is either refused or stored safely."""
    from hw_sim.storage import hostile_entries

    root = tmp_path / "simrec"
    base = os.fsencode(root)
    for e in hostile_entries():
        path = os.path.join(base, e.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if e.kind == "symlink_out":
            os.symlink(b"/etc/passwd", path)
        elif e.kind == "fifo":
            os.mkfifo(path)
        elif e.kind == "device":
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
        else:
            with open(path, "wb") as fh:
                fh.write(e.kind.encode())
    s = await make_offloader().offload(ctx(), root)
    assert s.outcome == "complete"
    refused = _reasons(s.refused)
    for e in hostile_entries():
        if e.kind in ("symlink_out", "fifo", "device"):
            assert e.name in refused, e
    for f in s.stored:
        assert not f.stored_relpath.rsplit("/", 1)[1].startswith(".")
    check_store_invariants(db_path, store)


def test_unsafe_names() -> None:
    assert unsafe_name(b"..") and unsafe_name(b".") and unsafe_name(b"")
    assert unsafe_name(b"a/b") and unsafe_name(b"a\0b")
    assert unsafe_name(b"..MP4") is None and unsafe_name(b"\xff") is None


def test_open_refuses_escapes_and_swapped_symlinks(source: Path, tmp_path: Path) -> None:
    make_file(source, "DCIM/A.MP4", 10)
    root = os.fsencode(source)
    with pytest.raises(SourceRefusedError):
        open_source(root, b"DCIM/../DCIM/A.MP4")
    # swapped for a symlink after the listing
    files = scan(root, ["DCIM"]).files
    assert [f.relpath for f in files] == [b"DCIM/A.MP4"]
    os.unlink(source / "DCIM/A.MP4")
    os.symlink(tmp_path / "x", source / "DCIM/A.MP4")
    with pytest.raises(SourceRefusedError, match="symlink"):
        open_source(root, b"DCIM/A.MP4")
    # a parent directory swapped for a symlink
    os.rename(source / "DCIM", source / "REAL")
    os.symlink(source / "REAL", source / "DCIM")
    with pytest.raises(SourceRefusedError, match="parent"):
        open_source(root, b"DCIM/A.MP4")
