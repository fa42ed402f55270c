"""Power cuts during an offload, on the HIL machine (see tests/hil/hil_power.py and
docs/power-cut.md): the bounded CI share of the campaign `scripts/hil/power-cut` runs.

One trial, three cuts at the moments a kill -9 test cannot judge: mid-file after a
periodic fdatasync, after the rename before the ledger commit, and during a wipe after the
recorder deleted the file but before the dock recorded it. Each cut loses the guest's page
cache and every write the guest had not flushed to its state disk; after each the guest
boots again and the agent resumes; after the last the agent must finish the job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .hil_power import Cut, Trial, summarise
from .hil_vm import build_image

pytestmark = pytest.mark.timeout(2400)


def test_power_cuts_lose_nothing(tmp_path: Path) -> None:
    xchg = os.environ.get("DOCK_HIL_XCHG")
    workdir = Path(xchg) / "power" if xchg else tmp_path
    cuts = [Cut(hold="copy_synced:1"), Cut(hold="installed:1"), Cut(hold="wipe_sent:1")]
    report = Trial(build_image(), workdir, "ci", cuts).run()
    line = json.dumps({"power_cut": summarise([report]), "elapsed_s": report.elapsed_s,
                       "cuts": [{k: c.get(k) for k in ("boot", "hit", "boot_s")}
                                for c in report.cuts]})
    print(line)
    if xchg:  # scripts/hil/run prints these lines at the end of the run
        with (Path(xchg) / "timings.jsonl").open("a") as fh:
            fh.write(line + "\n")
    # Every cut was reached at the step it names (the agent held there when the power went).
    hits = [c["hit"] for c in report.cuts]
    assert hits == ["HOLD copy_synced 1", "HOLD installed 1", "HOLD wipe_sent 1"], report.cuts
    # A flush must reach the disk: the guest sees a write-back cache, so it sends them.
    assert report.final["write_cache"] == "write back", report.final
    # The recorder's delete at the third cut really happened before the power went.
    assert report.cuts[2]["recorder_deleted"], report.cuts
    assert report.problems == [], report.problems
    # The agent finished: every file stored, verified and wiped from the recorder.
    assert report.final["on_recorder"] == []
    assert len(report.final["evidence"]) == 3
    assert all(e["verify_state"] == "ok" and e["wiped"] for e in report.final["evidence"])
