"""Recorder-supplied strings with control characters never forge a line or drive the
terminal: not in the agent's text log, not in any dockctl view. The raw value stays in the
structured outputs (the ledger's data, `--json`).

A hostile recorder carries them in its officer number and name and in a footage file
name; a second one claims a serial with a newline (and is refused for the mismatch, whose
fault names that serial)."""

from __future__ import annotations

import re

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import Faults, FootageSpec, RecorderSpec
from hw_sim.storage import CONTROL_NAME

from .conftest import RigFactory
from .harness import until

MARK = "FRG"  # what every hostile string puts right after its newline
OFFICER_NO = "7\nFRG"
OFFICER_NAME = "Li\nFRG\x1b[2J\u2028\u202eW"
CLAIMED = "X\nFRG\r"
# Anything a terminal or a line reader would act on, other than the line breaks we write.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def check_human_output(what: str, text: str) -> None:
    assert not RAW_CONTROL.search(text), f"{what}: raw control character in {text!r}"
    forged = [line for line in text.splitlines() if line.startswith(MARK)]
    assert not forged, f"{what}: forged lines {forged}\n{text}"


async def test_control_characters_are_escaped_in_every_human_facing_output(
        make_rig: RigFactory) -> None:
    rig = make_rig()
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    hostile = RecorderSpec(
        "BWC30001", officer=OfficerRecord(officer_no=OFFICER_NO, officer_name=OFFICER_NAME,
                                          unit_no="U1", unit_name="Unit\n1"),
        footage=FootageSpec(count=1, size_bytes=64 * 1024), faults=Faults(control_names=True))
    liar = RecorderSpec("BWC30002", footage=FootageSpec(count=1, size_bytes=64 * 1024),
                        faults=Faults(claimed_serial=CLAIMED))
    await rig.plug("1", hostile)
    await rig.plug("2", liar)
    await rig.wait_released("BWC30001")
    await rig.wait_ledger(lambda rows: any(r["kind"] == "fault" and r["bay"] == "2"
                                           for r in rows), "the serial mismatch fault")

    # The raw values are in the structured records.
    ledger = await rig.dockctl_json("ledger")
    assert any(e["officer"] == OFFICER_NO for e in ledger)
    assert any(e["data"].get("officer_name") == OFFICER_NAME for e in ledger)
    names = {e["data"].get("source_name_hex") for e in ledger}
    assert CONTROL_NAME.hex() in names
    faults = await rig.dockctl_json("faults")
    (mismatch,) = [f for f in faults if f["code"] == "serial_mismatch"]
    assert mismatch["detail"]["claimed_serial"] == CLAIMED
    assert CLAIMED in mismatch["reason"]

    # Every human-facing view shows them escaped, each record on its own line.
    views = {}
    for args in (("ledger",), ("faults",), ("status",), ("readiness",), ("verify",),
                 ("watch", "--plain", "--until-done", "2", "--timeout", "40")):
        code, out, err = await rig.dockctl(*args)
        assert code in (0, 1), f"dockctl {args}: {code} {err}"
        check_human_output(f"dockctl {' '.join(args)}", out + err)
        views[args[0]] = out
    assert "7\\nFRG" in views["ledger"] and "7\\nFRG" in views["status"]
    assert "X\\nFRG\\r" in views["faults"]
    assert "Li\\nFRG\\x1b[2J\\u2028\\u202eW" in views["watch"]

    # The agent's text log: one line per record, the hostile values escaped.
    await until(lambda: "claims serial" in rig.agent.log_text(), "the refusal in the agent log",
                agent=rig.agent)
    rig.agent.terminate()
    log = rig.agent.log_text()
    check_human_output("agent log", log)
    assert "X\\nFRG\\r" in log
