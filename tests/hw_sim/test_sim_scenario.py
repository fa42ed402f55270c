"""Scenario files and the dock-sim command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import pytest
from blake3 import blake3

from agent.devices.events import (
    DirectoryStorage,
    RecorderPlugged,
    RecorderUnplugged,
    StorageAppeared,
)
from firmware_bridge.client import RecorderClient
from hw_sim.dock import VirtualDock
from hw_sim.errors import SpecError
from hw_sim.footage import expected_files
from hw_sim.recorder import DEFAULT_FLEET_SECRET
from hw_sim.scenario import SCENARIOS_DIR, load_scenario, parse_scenario, run_timeline

from .sim_helpers import Collector

SCENARIO = """
[dock]
bays = ["A", "B"]

[[recorder]]
serial = "BWC00001"
battery_percent = 80
clock_offset_s = -42.5
officer = { officer_no = "1001001", officer_name = "李伟", unit_no = "U01", unit_name = "一队" }
footage = { count = 2, size_mib = 0.25, seed = 3, start_ms = 1795000000000 }
faults = { clock_set = "error", silent_commands = ["battery"], eio_at = [[0, 1000]] }

[[recorder]]
serial = "BWC00002"
footage = { sizes = [100, 200], start_ms = 1795000000000 }

[[timeline]]
at = 0.0
action = "plug"
bay = "A"
serial = "BWC00001"

[[timeline]]
at = 0.05
action = "plug"
bay = "B"
serial = "BWC00002"

[[timeline]]
at = 0.1
action = "unplug"
bay = "A"
"""


def test_parse_scenario(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(SCENARIO)
    sc = load_scenario(p)
    assert sc.bays == ["A", "B"]
    r1 = sc.recorders["BWC00001"]
    assert r1.officer is not None and r1.officer.officer_name == "李伟"
    assert r1.footage.file_sizes == (256 * 1024, 256 * 1024)
    assert r1.faults.clock_set == "error" and r1.faults.eio_at == ((0, 1000),)
    assert r1.faults.silent_commands == frozenset({"battery"})
    assert sc.recorders["BWC00002"].footage.file_sizes == (100, 200)
    assert [(e.at_s, e.action, e.bay) for e in sc.timeline] == [
        (0.0, "plug", "A"), (0.05, "plug", "B"), (0.1, "unplug", "A")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[recorder]]\nserial = "BWC00001"\ncolour = "red"\n', "unknown keys"),
        ('[[recorder]]\nserial = "BWC1"\n', "8 ASCII"),
        ('[[recorder]]\nserial = "BWC00001"\nfaults = { nope = 1 }\n', "unknown keys"),
        ('[[recorder]]\nserial = "BWC00001"\nofficer = { officer_no = "12345678" }\n',
         "officer"),
        ('[[timeline]]\naction = "plug"\nbay = "1"\nserial = "BWC00009"\n', "plug needs"),
        ('[[timeline]]\naction = "dance"\nbay = "1"\n', "action"),
        ('[[timeline]]\naction = "unplug"\nbay = "7"\n', "no bay"),
        ("[dock]\nbays = 2\nextra = 1\n", "unknown keys"),
        ("this is not toml", "cannot read"),
        ('[[recorder]]\nserial = "BWC00001"\nfield_log = [["sneeze", "", 1]]\n',
         "unknown event kind"),
        ('[[recorder]]\nserial = "BWC00001"\nfield_log = [["low_battery", 5]]\n',
         "expected \\[kind"),
    ],
)
def test_bad_scenarios_are_named(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_scenario(p)


async def test_run_timeline_in_process(tmp_path: Path) -> None:
    sc = parse_scenario({
        "dock": {"bays": 2},
        "recorder": [{"serial": "BWC00001", "footage": {"sizes": [10]}}],
        "timeline": [{"at": 0, "action": "plug", "bay": "2", "serial": "BWC00001"}],
    })
    async with VirtualDock(sc.bays, workdir=tmp_path) as dock:
        await run_timeline(dock, sc)
        assert dock.listing() == [("1", None, None), ("2", "BWC00001", None)]


def test_shipped_scenarios_are_valid() -> None:
    files = sorted(SCENARIOS_DIR.glob("*.toml"))
    assert files
    for f in files:
        sc = load_scenario(f)
        assert sc.recorders and sc.timeline


async def test_timeline_repeats_and_skips_impossible_steps(tmp_path: Path) -> None:
    sc = parse_scenario({
        "dock": {"bays": 1, "repeat_s": 0.1},
        "recorder": [{"serial": "BWC00001", "footage": {"sizes": [10]}},
                     {"serial": "BWC00002", "footage": {"sizes": [10]}}],
        "timeline": [{"at": 0, "action": "plug", "bay": "1", "serial": "BWC00001"},
                     {"at": 0, "action": "plug", "bay": "1", "serial": "BWC00002"},  # occupied
                     {"at": 0.05, "action": "unplug", "bay": "1"}],
    })
    plugs = 0
    async with VirtualDock(sc.bays, workdir=tmp_path) as dock:
        original = dock.plug

        async def counting_plug(*a: object, **kw: object) -> object:
            nonlocal plugs
            rec = await original(*a, **kw)  # type: ignore[arg-type]
            plugs += 1
            return rec

        dock.plug = counting_plug  # type: ignore[method-assign, assignment]
        task = asyncio.create_task(run_timeline(dock, sc))
        async with asyncio.timeout(120):
            while plugs < 3:  # the third plug can only come from a repetition
                await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with pytest.raises(SpecError, match="repeat_s"):
        parse_scenario({"dock": {"repeat_s": 0.01}, "recorder": [{"serial": "BWC00001"}],
                        "timeline": [{"at": 1, "action": "unplug", "bay": "1"}]})


async def test_cli_plays_a_scenario(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.replace("eio_at = [[0, 1000]]", "hostile_names = true"))
    sock = tmp_path / "sim.sock"
    col = Collector(sock)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.cli", "--socket", str(sock), "--scenario", str(scenario),
        "--workdir", str(tmp_path / "work"), "--interactive",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        evs = await col.wait_for(3, timeout=120)
        assert [type(e) for e in evs[:3]] == [RecorderPlugged, RecorderPlugged, RecorderUnplugged]
        assert {(e.key, e.bay) for e in evs[:3]  # type: ignore[union-attr]
                } == {("BWC00001", "A"), ("BWC00002", "B")}
        proc.stdin.write(b"plug A BWC00001\nlist\nunplug B\nplug Z BWC00003\n")
        await proc.stdin.drain()
        evs = await col.wait_for(5, timeout=120)
        plugged = evs[3]
        assert isinstance(plugged, RecorderPlugged)
        assert (plugged.key, plugged.bay, plugged.source) == ("BWC00001", "A", "sim")
        assert evs[4] == RecorderUnplugged(key="BWC00002", bay="B")
        # the agent's view across processes: protocol on the tty, files at the storage path
        client = await RecorderClient.open(plugged.tty_path, timeout=10.0)
        try:
            await client.hello()
            await client.authenticate(DEFAULT_FLEET_SECRET)
            officer = await client.get_officer()
            assert officer.officer_name == "李伟"
            await client.set_mass_storage(True)
            evs = await col.wait_for(6, timeout=120)
            appeared = evs[5]
            assert isinstance(appeared, StorageAppeared) and appeared.key == "BWC00001"
            assert isinstance(appeared.storage, DirectoryStorage)
            root = Path(appeared.storage.path)
            spec = load_scenario(scenario).recorders["BWC00001"]
            for e in expected_files(spec):
                data = (root / e.name.decode()).read_bytes()
                assert blake3(data).digest() == e.blake3
        finally:
            await client.close()
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "bay A: BWC00001 tty=/dev/pts/" in text and "bay B: BWC00002" in text
        assert "error: no bay 'Z'" in text
        assert not (tmp_path / "work" / "BWC00001" / "media").exists()  # locked again on exit
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await col.close()


async def test_cli_exits_when_done_and_reports_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[recorder]]\nserial = "x"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.cli", "--socket", str(tmp_path / "s.sock"),
        "--scenario", str(bad), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"8 ASCII" in err
    good = tmp_path / "good.toml"
    good.write_text(SCENARIO.replace("eio_at = [[0, 1000]]", "refuse_auth = true"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hw_sim.cli", "--socket", str(tmp_path / "s.sock"),
        "--scenario", str(good), "--exit-when-done",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert b"timeline done" in out
    assert not (tmp_path / "s.sock").exists()


async def test_timeline_changes_faults(tmp_path: Path) -> None:
    sc = parse_scenario({
        "dock": {"bays": 1},
        "recorder": [{"serial": "BWC00001", "footage": {"sizes": [10]}}],
        "timeline": [
            {"at": 0, "action": "plug", "bay": "1", "serial": "BWC00001"},
            {"at": 0, "action": "faults", "bay": "1", "faults": {"clock_set": "ignored"}},
        ],
    })
    async with VirtualDock(sc.bays, workdir=tmp_path) as dock:
        await run_timeline(dock, sc)
        assert dock.recorders["1"].faults.clock_set == "ignored"
    with pytest.raises(SpecError, match="faults table"):
        parse_scenario({"timeline": [{"action": "faults", "bay": "1"}]})


def test_field_log_in_a_scenario(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[[recorder]]\nserial = "BWC00001"\n'
                 'field_log = [["low_battery", "9%", 3600], [6, "", 60.5]]\n')
    r = load_scenario(p).recorders["BWC00001"]
    assert r.field_log == ((5, "9%", 3600.0), (6, "", 60.5))
