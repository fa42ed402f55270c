"""Evidence lifecycle end to end on a real agent with virtual recorders: approved exports
with the access register (access §3-8, 004 §16-18), case tags (000 §4, 004 §19).

The export package is checked with the reference ASC MHL tool (`ascmhl`), with openssl for
the statement's signature, and with `dockctl verify-export`; tampering is caught by all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.messages import OfficerRecord
from hw_sim.spec import MIB, FootageSpec, RecorderSpec

from .conftest import RigFactory
from .harness import Rig, render_toml, until

ALICE = OfficerRecord("3001001", "Sun Li", "U03", "Unit 3")
APPROVERS = {"U03": ["insp.wang"], "U09": ["insp.zhao"]}
ASCMHL = str(Path(sys.executable).with_name("ascmhl"))
ACCESS = ("--requester", "det.liu", "--purpose", "case 2026-117 court bundle")


def spec(serial: str, seed: int, count: int = 2, size: int = 1 * MIB) -> RecorderSpec:
    return RecorderSpec(serial, officer=ALICE, battery_percent=95,
                        footage=FootageSpec(count=count, size_bytes=size, seed=seed))


def configure(rig: Rig, audit: dict[str, Any] | None = None, **access: Any) -> None:
    rig.config.write_text(render_toml({**rig.sections(),
                                       "access": {"approvers": APPROVERS, **access},
                                       "audit": audit or {"enabled": False}}))


async def docked_rig(make_rig: RigFactory, serial: str, *, count: int = 2,
                     size: int = 1 * MIB, audit: dict[str, Any] | None = None,
                     **access: Any) -> Rig:
    rig = make_rig(None)
    configure(rig, audit, **access)
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await rig.plug("1", spec(serial, 41, count, size))
    await rig.wait_released(serial)
    return rig


def kinds(rig: Rig) -> list[str]:
    return [r["kind"] for r in rig.ledger()]


def exports(rig: Rig) -> list[Any]:
    return rig.query("SELECT * FROM exports ORDER BY id")


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300,
                          check=False)


async def test_export_package_is_approved_registered_and_verifiable(
        make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41001")
    target = tmp_path / "usb"
    target.mkdir()

    # -- refused: no approver, an approver not on the unit's list, self-approval, bad file
    for extra, why in ((("--recorder", "BWC41001"), "approver is required"),
                       (("--recorder", "BWC41001", "--approver", "insp.zhao"),
                        "not an approver for unit 'U03'"),
                       (("--recorder", "BWC41001", "--approver", "det.liu"),
                        "someone other than the requester"),
                       (("999", "--approver", "insp.wang"), "no stored file 999")):
        code, out, err = await rig.dockctl("export", *ACCESS, *extra, "--target", str(target))
        assert code == 1 and why in out, (code, out, err)
    assert "export_started" not in kinds(rig) and not exports(rig)
    assert list(target.iterdir()) == []

    # -- approved: registered first, written, re-read, then recorded complete
    out = await rig.dockctl_json("export", *ACCESS, "--recorder", "BWC41001",
                                 "--approver", "insp.wang", "--target", str(target))
    pkg = Path(out["package"])
    assert out["state"] == "complete" and out["files"] == 2 and pkg.parent == target
    ks = kinds(rig)
    assert ks.index("export_started") < ks.index("exported")
    started = next(r for r in rig.ledger() if r["kind"] == "export_started")
    data = json.loads(started["data"])
    assert (data["requester"], data["approver"]) == ("det.liu", "insp.wang")
    assert data["purpose"] == "case 2026-117 court bundle" and len(data["files"]) == 2
    [row] = exports(rig)
    assert row["state"] == "complete"
    register = await rig.dockctl_json("register")
    assert [(r["kind"], r["state"], r["approver"]) for r in register] == [
        ("export", "complete", "insp.wang")]

    # -- the statement: signed, names maker, extractor, approver, purpose, unit, BLAKE3
    stmt = json.loads((pkg / "extraction-statement.json").read_bytes())
    stored = {s.blake3 for s in rig.stored("BWC41001")}
    assert {f["blake3"] for f in stmt["files"]} == stored
    assert {f["recorder"] for f in stmt["files"]} == {"BWC41001"}
    assert {f["officer_no"] for f in stmt["files"]} == {"3001001"}
    assert stmt["extractor"] == "det.liu" and stmt["approver"] == "insp.wang"
    assert stmt["units"] == ["U03"] and stmt["register_seq"] == started["seq"]
    pub = rig.state_dir / "dock.key.pub"
    sig = run("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
              "-in", str(pkg / "extraction-statement.json"),
              "-sigfile", str(pkg / "extraction-statement.sig"))
    assert sig.returncode == 0, sig.stdout + sig.stderr
    code, text, err = await rig.dockctl("verify-export", str(pkg), "--key", str(pub))
    assert code == 0 and text.startswith("OK"), text + err

    # -- the reference ASC MHL tool accepts the package ...
    good = tmp_path / "good"
    shutil.copytree(pkg, good)
    diff = run(ASCMHL, "diff", str(good))
    assert diff.returncode == 0, diff.stdout + diff.stderr
    create = run(ASCMHL, "create", "-h", "sha1", str(good))
    assert create.returncode == 0, create.stdout + create.stderr

    # ... and rejects a tampered one (changed byte, added file); so does dockctl
    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    victim = next((bad / "files").rglob("*.*"))
    with victim.open("r+b") as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))
    create = run(ASCMHL, "create", "-h", "sha1", str(bad))
    assert create.returncode == 11, create.stdout + create.stderr
    code, text, _ = await rig.dockctl("verify-export", str(bad), "--key", str(pub))
    assert code == 1 and "content differs" in text
    added = tmp_path / "added"
    shutil.copytree(pkg, added)
    (added / "files" / "planted.mp4").write_bytes(b"not evidence")
    diff = run(ASCMHL, "diff", str(added))
    assert diff.returncode != 0 and "planted.mp4" in diff.stdout + diff.stderr
    code, text, _ = await rig.dockctl("verify-export", str(added), "--key", str(pub))
    assert code == 1 and "not listed" in text

    # -- a view is an access-register entry too, committed before anything is shown
    file_id = rig.stored("BWC41001")[0].id
    code, text, err = await rig.dockctl("show", str(file_id), *ACCESS)
    assert code == 1 and "approver is required" in text
    shown = await rig.dockctl_json("show", str(file_id), *ACCESS, "--approver", "insp.wang")
    viewed = [r for r in rig.ledger() if r["kind"] == "accessed"]
    assert len(viewed) == 1 and shown[0]["access_seq"] == viewed[0]["seq"]
    register = await rig.dockctl_json("register")
    assert [r["kind"] for r in register] == ["export", "view"]
    assert rig.agent.terminate() == 0


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs export target")
    path.mkdir()
    opts = options if any(o.startswith("size=") for o in options) else ("size=1m", *options)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs",
                    str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def check_failed(rig: Rig, target: Path, reason: str) -> None:
    rows = exports(rig)
    assert rows and rows[-1]["state"] == "failed", [dict(r) for r in rows]
    assert reason in rows[-1]["detail"], rows[-1]["detail"]
    assert "exported" not in kinds(rig)
    assert rig.query("SELECT 1 FROM faults WHERE code = 'export_failed'")
    assert not [p for p in target.iterdir() if not p.name.startswith(".")]


async def test_failed_targets_are_faults_and_never_complete(make_rig: RigFactory,
                                                            tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41002", count=2, size=1 * MIB,
                           export_max_mib_per_s=1.0)
    approved = (*ACCESS, "--recorder", "BWC41002", "--approver", "insp.wang")

    # full: 2 MiB of footage on a 1 MiB disk
    with tmpfs(tmp_path / "full") as full:
        code, text, _ = await rig.dockctl("export", *approved, "--target", str(full))
        assert code == 1 and "No space left" in text, text
        check_failed(rig, full, "No space left")

    # read-only
    with tmpfs(tmp_path / "ro", "ro") as ro:
        code, text, _ = await rig.dockctl("export", *approved, "--target", str(ro))
        assert code == 1 and "Read-only" in text, text
        check_failed(rig, ro, "Read-only")

    # unplugged mid-way: the disk goes away while the first file is being written
    usb = tmp_path / "usb"
    usb.mkdir()
    task = asyncio.create_task(rig.dockctl("export", *approved, "--target", str(usb)))
    await until(lambda: any(p.is_file() for p in usb.rglob("*")), "export writing",
                agent=rig.agent)
    shutil.rmtree(usb)
    code, text, _ = await task
    assert code == 1 and "failed" in text, text
    assert not usb.exists(), "the export re-created a vanished target on the dock's disk"
    usb.mkdir()
    check_failed(rig, usb, "")
    register = await rig.dockctl_json("register")
    assert [r["state"] for r in register] == ["failed"] * 3
    assert rig.agent.terminate() == 0


async def test_kill9_mid_export_is_recorded_failed_after_restart(make_rig: RigFactory,
                                                                 tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41003", count=2, size=2 * MIB,
                           export_max_mib_per_s=0.5)
    usb = tmp_path / "usb"
    usb.mkdir()
    task = asyncio.create_task(rig.dockctl(
        "export", *ACCESS, "--recorder", "BWC41003", "--approver", "insp.wang",
        "--target", str(usb)))
    await until(lambda: any(p.is_file() for p in usb.rglob("*")), "export writing",
                agent=rig.agent)
    rig.agent.kill9()
    await task
    assert [r["state"] for r in exports(rig)] == ["started"]
    rig.start_agent()
    await until(lambda: [r["state"] for r in exports(rig)] == ["failed"],
                "interrupted export recorded failed", agent=rig.agent)
    assert "exported" not in kinds(rig)
    failed = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "export_failed"]
    assert failed and failed[0]["interrupted"] is True
    assert failed[0]["partial_removed"] is True and list(usb.iterdir()) == []
    assert rig.agent.terminate() == 0


async def test_case_tags_by_file_and_selection_append_and_show(make_rig: RigFactory) -> None:
    rig = await docked_rig(make_rig, "BWC41004", count=3)
    ids = [s.id for s in rig.stored("BWC41004")]

    # refused: no tagger, nothing to tag with, a file that does not exist
    for extra, why in ((("--case-no", "C-1", str(ids[0])), "tagged_by is required"),
                       (("--by", "sgt.chen", str(ids[0])), "needs at least one of"),
                       (("--by", "sgt.chen", "--case-no", "C-1", "4242"),
                        "no stored file 4242")):
        args = extra if "--by" in extra else ("--by", "", *extra)
        code, out, err = await rig.dockctl("tag", *args)
        assert code == 1 and why in out, (code, out, err)
    assert "tagged" not in kinds(rig)

    one = await rig.dockctl_json("tag", "--by", "sgt.chen", "--case-no", "2026-117",
                                 "--case-party", "Wang Wu", "--cause", "traffic dispute",
                                 str(ids[0]))
    assert one["file_ids"] == [ids[0]]
    # by selection: a recorder and a time range covering every recording
    every = await rig.dockctl_json("tag", "--by", "sgt.chen", "--recorder", "BWC41004",
                                   "--from", "2000-01-01T00:00:00Z",
                                   "--to", "2100-01-01T00:00:00Z",
                                   "--activity", "night patrol", "--label", "review")
    assert every["file_ids"] == ids
    # re-tag appends: the first tag stays
    await rig.dockctl_json("tag", "--by", "insp.wang", "--case-no", "2026-118", str(ids[0]))
    tagged = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "tagged"]
    assert [t["tagged_by"] for t in tagged] == ["sgt.chen", "sgt.chen", "insp.wang"]

    files = await rig.dockctl_json("files", "--recorder", "BWC41004")
    first = next(f for f in files if f["file_id"] == ids[0])
    assert [t["case_no"] for t in first["tags"]] == ["2026-117", None, "2026-118"]
    assert first["tags"][1]["labels"] == ["review"]
    case = await rig.dockctl_json("files", "--case-no", "2026-117")
    assert [f["file_id"] for f in case] == [ids[0]]
    code, text, _ = await rig.dockctl("files", "--recorder", "BWC41004")
    assert code == 0 and "2026-117" in text and "night patrol" in text
    assert rig.agent.terminate() == 0


async def test_fixity_audit_finds_tampered_and_missing_files(make_rig: RigFactory) -> None:
    rig = await docked_rig(make_rig, "BWC41005", count=3)
    files = rig.stored("BWC41005")
    status = await rig.dockctl_json("audit")
    assert status["last_full_cycle"] is None and status["current_cycle"]["files_pending"] == 3

    clean = await rig.dockctl_json("audit", "--all")
    assert clean["last_full_cycle"]["files_checked"] == 3
    assert clean["last_full_cycle"]["problems"] == []
    assert not rig.query("SELECT 1 FROM faults WHERE code = 'store_integrity'")

    # tamper with one stored file, remove another
    tampered = rig.store_dir / files[0].relpath
    tampered.chmod(0o600)
    with tampered.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"X")
    (rig.store_dir / files[1].relpath).unlink()
    code, out, err = await rig.dockctl("audit", "--all")
    assert code == 1, out + err
    assert "mismatch" in out and "missing" in out
    assert rig.query("SELECT 1 FROM faults WHERE code = 'store_integrity' AND cleared_us"
                     " IS NULL AND recorder = 'BWC41005'")
    # each finding is its own fault entry in the ledger (and so on MQTT's fault stream)
    found = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "fault"]
    problems = sorted((d["detail"]["file_id"], d["detail"]["problem"]) for d in found
                      if d["code"] == "store_integrity")
    assert problems == [(files[0].id, "mismatch"), (files[1].id, "missing")]
    runs = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "audit_run"]
    assert [r["cycle"] for r in runs] == [1, 2] and all(r["cycle_complete"] for r in runs)
    assert len(runs[1]["problems"]) == 2
    assert rig.agent.terminate() == 0


async def test_fixity_audit_runs_on_its_schedule_in_slices(make_rig: RigFactory) -> None:
    # 3 files, a run per second, the whole store every 86 s: slices of one file
    rig = await docked_rig(make_rig, "BWC41006", count=3,
                           audit={"interval_s": 1.0, "cycle_days": 0.001})
    def cycles(rows: list[Any]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            if r["kind"] == "audit_run":
                d = json.loads(r["data"])
                out.setdefault(d["cycle"], []).append(d)
        return out

    def full(rows: list[Any]) -> list[list[dict[str, Any]]]:
        return [runs for runs in cycles(rows).values() if runs[-1]["cycle_complete"]
                and sum(r["files_checked"] for r in runs) == 3]

    await rig.wait_ledger(lambda rows: bool(full(rows)), "a full scheduled audit cycle")
    # slices of one file per run; one "audit_run" entry each
    assert [r["files_checked"] for r in full(rig.ledger())[0]] == [1, 1, 1]
    status = await rig.dockctl_json("audit")
    assert status["last_full_cycle"]["files_checked"] == 3
    assert rig.agent.terminate() == 0


async def test_preserve_writes_two_verified_labelled_copies_and_holds(
        make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41007", count=2)
    ids = [s.id for s in rig.stored("BWC41007")]
    labels = ("--case-no", "2026-117", "--case-name", "Wang v. Li", "--requester",
              "rec.officer", "--approver", "insp.wang")
    same = tmp_path / "same"
    (same / "a").mkdir(parents=True)
    (same / "b").mkdir()
    code, text, _ = await rig.dockctl("preserve", *map(str, ids), *labels,
                                      "--target", str(same / "a"), "--target", str(same / "b"))
    assert code == 1 and "two different" in text, text
    with tmpfs(tmp_path / "disk1", "size=16m") as d1, tmpfs(tmp_path / "disk2", "size=16m") as d2:
        code, text, _ = await rig.dockctl("preserve", *map(str, ids), "--requester", "x",
                                          "--approver", "insp.wang",
                                          "--target", str(d1), "--target", str(d2))
        assert code == 1 and "labelled with its case" in text
        out = await rig.dockctl_json("preserve", *map(str, ids), *labels,
                                     "--target", str(d1), "--target", str(d2))
        pub = rig.state_dir / "dock.key.pub"
        for pkg in map(Path, out["packages"]):
            code, text, _ = await rig.dockctl("verify-export", str(pkg), "--key", str(pub))
            assert code == 0, text
            assert run(ASCMHL, "create", "-h", "sha1", str(pkg)).returncode == 0
            stmt = json.loads((pkg / "extraction-statement.json").read_bytes())
            assert stmt["kind"] == "preservation" and stmt["units"] == ["U03"]
            assert stmt["preservation"]["case_no"] == "2026-117"
            assert stmt["preservation"]["case_name"] == "Wang v. Li"
            assert {f["officer_no"] for f in stmt["files"]} == {"3001001"}
        assert {Path(p).parent for p in out["packages"]} == {d1, d2}
    preserved = [json.loads(r["data"]) for r in rig.ledger() if r["kind"] == "preserved"]
    assert len(preserved) == 1 and preserved[0]["file_ids"] == ids
    holds = rig.query("SELECT file_id FROM evidence_holds WHERE set_by = 'preservation'"
                      " AND cleared_us IS NULL")
    assert sorted(r[0] for r in holds) == ids
    register = await rig.dockctl_json("register")
    assert [(r["kind"], r["state"]) for r in register] == [("preservation", "complete")] * 2
    assert rig.agent.terminate() == 0


def render_pdf_text(html_file: Path, workdir: Path) -> str:
    """Print a page with Debian's headless Chromium and extract the PDF's text."""
    chromium = shutil.which("chromium")
    if chromium is None or shutil.which("pdftotext") is None:
        pytest.fail("chromium and pdftotext are needed (scripts/lib/bootstrap.sh installs"
                    " them)")
    pdf = workdir / "report.pdf"
    env = {**os.environ, "HOME": str(workdir)}
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={workdir / 'profile'}", "--no-pdf-header-footer",
         f"--print-to-pdf={pdf}", html_file.as_uri()],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0 and pdf.exists(), proc.stderr[-2000:]
    assert pdf.read_bytes().startswith(b"%PDF")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    return text


async def test_supervision_report_json_csv_and_html_in_chromium(
        make_rig: RigFactory, tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41008", count=2)
    ids = [s.id for s in rig.stored("BWC41008")]
    await rig.dockctl_json("show", str(ids[0]), *ACCESS, "--approver", "insp.wang")
    target = tmp_path / "usb"
    target.mkdir()
    await rig.dockctl_json("export", str(ids[1]), *ACCESS, "--approver", "insp.wang",
                           "--target", str(target))
    period = ("--period", "2000-01-01..2099-12-31")

    code, out, err = await rig.dockctl("report", *period, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    [alice] = report["officers"]
    assert alice["key"] == "3001001" and alice["name"] == "Sun Li"
    assert alice["files"] == 2 and alice["dockings"] == 1
    assert (alice["views"], alice["exports"]) == (1, 1)
    assert {a["approver"] for a in alice["access"]} == {"insp.wang"}
    assert [r["key"] for r in report["recorders"]] == ["BWC41008"]
    # a period with nothing in it, and filters that match nobody
    code, out, _ = await rig.dockctl("report", "--period", "2001-Q1")
    assert code == 0 and json.loads(out)["officers"] == []
    code, out, _ = await rig.dockctl("report", *period, "--officer", "9999999")
    assert json.loads(out)["officers"] == []
    code, _, err = await rig.dockctl("report", "--period", "2026-Q5")
    assert code == 2 and "use 2026-Q3" in err

    code, out, _ = await rig.dockctl("report", *period, "--format", "csv")
    lines = out.splitlines()
    assert lines[0].startswith("period,scope,key,name,dockings,files")
    assert any(line.split(",")[1:3] == ["officer", "3001001"] for line in lines)
    assert lines[-1].endswith("insp.wang")

    page = tmp_path / "report.html"
    code, _, err = await rig.dockctl("report", *period, "--format", "html", "--out", str(page))
    assert code == 0, err
    assert "http://" not in page.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
    text = await asyncio.to_thread(render_pdf_text, page, tmp_path)
    assert "Supervision report" in text and "3001001" in text and "BWC41008" in text
    assert "insp.wang" in text and "Hours recorded per officer" in text
    assert rig.agent.terminate() == 0


async def test_lifecycle_commands_over_mqtt(make_rig: RigFactory, broker: Any, central: Any,
                                            tmp_path: Path) -> None:
    from .conftest import DOCK_ID

    rig = make_rig(broker.settings(DOCK_ID))
    configure(rig)
    await rig.start_dock()
    rig.start_agent()
    await rig.wait_agent_up()
    await until(lambda: any(b and b.get("state") == "online" for b in central.on("/status")),
                "agent online", agent=rig.agent)
    await rig.plug("1", spec("BWC41009", 49))
    await rig.wait_released("BWC41009")
    ids = [s.id for s in rig.stored("BWC41009")]

    async def send(name: str, cmd_id: str, args: dict[str, Any]) -> Any:
        await central.command(DOCK_ID, name, {"id": cmd_id, "args": args})

        def replies() -> list[Any]:
            return [b for b in central.on(f"/reply/{name}") if b and b.get("id") == cmd_id]

        await central.wait_for(lambda: bool(replies()), timeout=120)
        return replies()[0]

    r = await send("tag", "t-1", {"selection": {"files": [ids[0]]}, "tagged_by": "central",
                                  "case_no": "2026-200"})
    assert r["ok"] and r["result"]["file_ids"] == [ids[0]], r
    r = await send("tag", "t-2", {"selection": {"files": [999]}, "tagged_by": "central",
                                  "case_no": "2026-200"})
    assert not r["ok"] and r["error"]["code"] == "rejected" and "999" in r["error"]["message"]
    r = await send("tag", "t-3", {"selection": {"files": [ids[0]]}, "tagged_by": "central",
                                  "case_no": "2026-200", "extra": 1})
    assert not r["ok"] and r["error"]["code"] == "invalid-args"

    target = tmp_path / "usb"
    target.mkdir()
    base = {"selection": {"recorder": "BWC41009"}, "target": str(target),
            "requester": "central.ops", "purpose": "review"}
    r = await send("export", "e-1", {**base, "approver": "insp.zhao"})
    assert not r["ok"] and r["error"]["code"] == "rejected" and "not an approver" in \
        r["error"]["message"]
    r = await send("export", "e-2", {key: v for key, v in base.items()})
    assert not r["ok"] and r["error"]["code"] == "invalid-args"  # the schema needs approver
    assert not exports(rig)
    r = await send("export", "e-3", {**base, "approver": "insp.wang"})
    assert r["ok"] and r["result"]["state"] == "complete", r
    assert run(ASCMHL, "diff", r["result"]["package"]).returncode == 0

    r = await send("audit", "a-1", {"run": "cycle"})
    assert r["ok"] and r["result"]["run"]["files_checked"] == 2
    assert r["result"]["last_full_cycle"]["problems"] == []
    # the register entries reached the central side as custody events
    await central.wait_for(lambda: {"export_started", "exported", "tagged", "audit_run"} <= {
        b["payload"].get("kind") for b in central.unique_events()}, timeout=120)
    assert rig.agent.terminate() == 0  # a loaded machine: stop publishes state


async def test_kill9_mid_preservation_never_records_it_complete(make_rig: RigFactory,
                                                                tmp_path: Path) -> None:
    rig = await docked_rig(make_rig, "BWC41010", count=2, size=2 * MIB,
                           export_max_mib_per_s=0.5)
    with tmpfs(tmp_path / "a", "size=16m") as a, tmpfs(tmp_path / "b", "size=16m") as b:
        task = asyncio.create_task(rig.dockctl(
            "preserve", "--recorder", "BWC41010", "--requester", "rec.officer",
            "--approver", "insp.wang", "--case-no", "2026-300", "--target", str(a),
            "--target", str(b)))
        await until(lambda: any(p.is_file() for p in a.rglob("*")), "preservation writing",
                    agent=rig.agent)
        rig.agent.kill9()
        await task
        # registered (and held) before any byte was written
        assert [r["state"] for r in exports(rig)] == ["started", "started"]
        assert len(rig.query("SELECT 1 FROM evidence_holds WHERE set_by = 'preservation'")) == 2
        rig.start_agent()
        await until(lambda: [r["state"] for r in exports(rig)] == ["failed", "failed"],
                    "interrupted preservation recorded failed", agent=rig.agent)
        assert "preserved" not in kinds(rig) and "exported" not in kinds(rig)
        assert list(a.iterdir()) == [] and list(b.iterdir()) == []  # partial copies removed
    assert rig.agent.terminate() == 0
