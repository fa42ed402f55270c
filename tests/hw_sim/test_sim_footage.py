"""Deterministic footage: names, times, content ranges and expected hashes."""

from __future__ import annotations

import functools
import itertools
import os
import stat
from pathlib import Path

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as hst

from hw_sim.errors import SpecError
from hw_sim.footage import (
    FTYP,
    content,
    expected_files,
    file_bytes,
    footage_files,
)
from hw_sim.models import BatteryModel, DeviceClock
from hw_sim.spec import Faults, FootageSpec, RecorderSpec
from hw_sim.storage import RecorderStorage, StorageRefusal, hostile_entries

from .sim_helpers import SMALL, START_MS, small_spec


def test_names_and_times_are_plausible() -> None:
    files = footage_files(small_spec())
    assert [f.index for f in files] == [0, 1, 2]
    assert files[0].start_ms == START_MS
    for f in files:
        assert f.name.startswith(b"DCIM/100BWC/BWC00001_") and f.name.endswith(b".MP4")
        assert f.end_ms > f.start_ms
    for a, b in itertools.pairwise(files):
        assert b.start_ms >= a.end_ms  # recordings never overlap
    assert len({f.name for f in files}) == 3


def test_content_is_deterministic_and_range_consistent() -> None:
    f = footage_files(small_spec())[1]
    whole = file_bytes(f)
    assert len(whole) == f.size and whole.startswith(FTYP)
    for off, n in [(0, 1), (3, 40), (23, 2), (1000, 77777), (f.size - 5, 100)]:
        assert content(f, off, n) == whole[off : off + n]
    assert content(f, f.size, 10) == b""
    again = footage_files(small_spec())[1]
    assert file_bytes(again) == whole


def test_seed_serial_and_index_change_content() -> None:
    a = file_bytes(footage_files(small_spec())[0])
    b = file_bytes(footage_files(small_spec("BWC00002"))[0])
    c = file_bytes(footage_files(small_spec(footage=FootageSpec(
        count=3, size_bytes=SMALL.size_bytes, seed=8, start_ms=START_MS)))[0])
    d = file_bytes(footage_files(small_spec())[1])
    assert len({a, b, c, d}) == 4


def test_expected_files_hash_the_content() -> None:
    spec = small_spec(footage=FootageSpec(sizes=(0, 10, 5 << 20), start_ms=START_MS))
    exp = expected_files(spec)
    assert [e.size for e in exp] == [0, 10, 5 << 20]
    for e, f in zip(exp, footage_files(spec), strict=True):
        assert e.blake3 == blake3(file_bytes(f)).digest()
        assert e.name == f.name and (e.start_ms, e.end_ms) == (f.start_ms, f.end_ms)


def test_default_start_is_recent_and_fixed_per_spec() -> None:
    spec = RecorderSpec(serial="BWC00009")
    assert spec.footage.start_ms is not None
    assert expected_files(spec)[0].start_ms == spec.footage.start_ms


@pytest.mark.parametrize(
    "kw",
    [
        {"serial": "SHORT"},
        {"serial": "BWC0000/"},
        {"serial": "BWC00001", "battery_percent": 101},
        {"serial": "BWC00001", "faults": Faults(eio_at=((5, 0),))},
        {"serial": "BWC00001", "storage_total_bytes": 10},
    ],
)
def test_invalid_specs_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(SpecError):
        RecorderSpec(**kw)  # type: ignore[arg-type]


def test_invalid_faults_are_refused() -> None:
    with pytest.raises(SpecError, match="silent_commands"):
        Faults(silent_commands=frozenset({"nonsense"}))
    with pytest.raises(SpecError):
        Faults(drop_byte_prob=1.5)
    with pytest.raises(SpecError):
        Faults(clock_set="maybe")  # type: ignore[arg-type]


# --- storage ---------------------------------------------------------------------------------


def test_materialise_writes_expected_files_once(tmp_path: Path) -> None:
    spec = small_spec()
    st = RecorderStorage(spec, tmp_path / spec.serial)
    st.materialise()
    exp = expected_files(spec)
    for e in exp:
        data = (st.backing / e.name.decode()).read_bytes()
        assert blake3(data).digest() == e.blake3
    inode = (st.backing / exp[0].name.decode()).stat().st_ino
    RecorderStorage(spec, tmp_path / spec.serial).materialise()  # a replug
    assert (st.backing / exp[0].name.decode()).stat().st_ino == inode
    assert [e.name for e in st.list_entries()] == [e.name for e in exp]


def test_changed_spec_rebuilds(tmp_path: Path) -> None:
    spec = small_spec()
    RecorderStorage(spec, tmp_path / spec.serial).materialise()
    bigger = small_spec(footage=FootageSpec(count=4, size_bytes=1000, start_ms=START_MS))
    st = RecorderStorage(bigger, tmp_path / spec.serial)
    st.materialise()
    assert [(e.name, e.size) for e in st.list_entries()] == [
        (e.name, e.size) for e in expected_files(bigger)
    ]


def test_plain_exposure_is_a_rename(tmp_path: Path) -> None:
    st = RecorderStorage(small_spec(), tmp_path / "BWC00001")
    st.materialise()
    assert not st.media.exists()
    assert st.expose_plain() == st.media and st.root == st.media
    assert not st.backing.exists() and (st.media / "DCIM").is_dir()
    st.hide_plain()
    assert not st.media.exists() and st.root == st.backing
    st.expose_plain()
    st2 = RecorderStorage(small_spec(), tmp_path / "BWC00001")
    st2.materialise()  # a killed simulator left it exposed: materialise hides it again
    assert st2.root == st2.backing and not st2.media.exists()


def test_guarded_delete(tmp_path: Path) -> None:
    spec = small_spec()
    st = RecorderStorage(spec, tmp_path / spec.serial)
    st.materialise()
    e0, e1, _ = expected_files(spec)
    with pytest.raises(StorageRefusal) as exc:
        st.delete(e1.name, e1.size, bytes(32))
    assert exc.value.reason == "mismatch"
    with pytest.raises(StorageRefusal) as exc:
        st.delete(e1.name, e1.size + 1, e1.blake3)
    assert exc.value.reason == "mismatch"
    with pytest.raises(StorageRefusal) as exc:
        st.delete(b"DCIM/../" + e1.name, e1.size, e1.blake3)
    assert exc.value.reason == "bad_name"
    with pytest.raises(StorageRefusal) as exc:
        st.delete(b"DCIM/100BWC/nope.MP4", 1, e1.blake3)
    assert exc.value.reason == "not_found"
    assert (st.backing / e1.name.decode()).exists()
    st.delete(e0.name, e0.size, e0.blake3)
    assert not (st.backing / e0.name.decode()).exists()
    assert len(st.list_entries()) == 2


def test_guarded_delete_rehashes_a_changed_file(tmp_path: Path) -> None:
    spec = small_spec()
    st = RecorderStorage(spec, tmp_path / spec.serial)
    st.materialise()
    e0 = expected_files(spec)[0]
    path = st.backing / e0.name.decode()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))  # same size, new mtime: the cached hash must not be used
    with pytest.raises(StorageRefusal):
        st.delete(e0.name, e0.size, e0.blake3)
    assert path.exists()


def test_hostile_names_exist_as_specified(tmp_path: Path) -> None:
    spec = small_spec(faults=Faults(hostile_names=True))
    st = RecorderStorage(spec, tmp_path / spec.serial)
    st.materialise()
    base = os.fsencode(st.backing)
    kinds: dict[str, int] = {}
    for e in hostile_entries():
        mode = os.lstat(os.path.join(base, e.name)).st_mode
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
        if e.kind == "symlink_out":
            assert stat.S_ISLNK(mode)
            target = os.readlink(os.path.join(base, e.name))
            resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.join(base, e.name)),
                                                     target))
            assert not resolved.startswith(base)
        elif e.kind == "fifo":
            assert stat.S_ISFIFO(mode)
        elif e.kind == "device":
            assert stat.S_ISCHR(mode)
        else:
            assert stat.S_ISREG(mode)
    long_name = next(e.name for e in hostile_entries() if e.kind == "long_name")
    assert len(os.path.basename(long_name)) == 255
    bad = next(e.name for e in hostile_entries() if e.kind == "bad_utf8")
    with pytest.raises(UnicodeDecodeError):
        bad.decode("utf-8")
    assert {"dotdot", "absolute", "symlink_out", "fifo", "long_name", "bad_utf8"} <= set(kinds)
    if os.geteuid() == 0:
        assert "device" in kinds
    listed = {e.name for e in st.list_entries()}
    assert {e.name for e in hostile_entries()} <= listed
    assert {e.name for e in expected_files(spec)} <= listed


def test_listing_without_hostile_fault_has_regular_files_only(tmp_path: Path) -> None:
    spec = small_spec()
    st = RecorderStorage(spec, tmp_path / spec.serial)
    st.materialise()
    os.mkfifo(st.backing / "DCIM" / "100BWC" / "stray.fifo")
    assert [e.name for e in st.list_entries()] == [e.name for e in expected_files(spec)]


# --- models ----------------------------------------------------------------------------------


def test_clock_offset_drift_and_set() -> None:
    c = DeviceClock.starting(1000.0, offset_s=-30.0, drift_ppm=100.0)
    assert c.now_ms(1000.0) == 970_000
    assert c.now_ms(11_000.0) == 10_970_000 + 1000  # 10 000 s at +100 ppm gains 1 s
    c.set_ms(20_000_000, 15_000.0)
    assert c.now_ms(15_000.0) == 20_000_000
    assert c.now_ms(25_000.0) == 20_000_000 + 10_000_000 + 1000  # rate error remains


def test_battery_charges_and_failing_battery_does_not() -> None:
    b = BatteryModel(50, 0.0, charge_percent_per_min=2.0)
    r0, r1, r2 = b.reading(0.0), b.reading(600.0), b.reading(3600.0)
    assert (r0.percent, r1.percent, r2.percent) == (50, 70, 100)
    assert r0.charging and not r2.charging
    assert r1.millivolts > r0.millivolts
    bad = BatteryModel(50, 0.0, failing=True)
    f0, f1 = bad.reading(0.0), bad.reading(600.0)
    assert f1.percent < f0.percent and not f1.charging
    assert f0.health_percent < 50 and f0.temperature_c > 45


@given(off=hst.integers(0, 300_000), n=hst.integers(0, 100_000), idx=hst.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_any_range_matches_the_whole(off: int, n: int, idx: int) -> None:
    f = footage_files(small_spec())[idx]
    assert content(f, off, n) == _whole(idx)[off : off + n]


@functools.cache
def _whole(idx: int) -> bytes:
    return file_bytes(footage_files(small_spec())[idx])
