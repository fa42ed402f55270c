"""A stop reaches every long job inside one file, not only between files.

Each job that hashes stored or exported files (the deep verify, a fixity audit slice, an
export's read-back) is stopped while it reads one very large file: a sparse file of a TiB,
which takes minutes to read and hash even at memory speed. The job must end at its next
chunk (waited for with a generous deadline, never timed), and what it leaves must say
nothing about the unfinished file: no "intact", no "corrupt"."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.actions import AgentActions
from agent.dockview import DockView, RecorderFeed
from agent.health.integrity import sync_integrity_fault
from agent.lifecycle import package
from agent.lifecycle.fixity import FixityAuditor
from agent.longjobs import JobStopped, LongJobs
from agent.mqtt.errors import CommandRejected
from agent.schemas import ALL_SCHEMAS
from agent.session.registry import SessionTable
from agent.settings import AuditSettings, DockSettings, Settings
from agent.store import faults
from agent.store.db import Database
from agent.store.evidence import StoredFileRecord, commit_file, layout_relpath
from agent.store.faults import FaultCode
from agent.store.ledger import Ledger
from agent.store.signing import CheckpointSigner
from agent.store.verify import Problem
from tests.openfiles import holds_open

HUGE = 1 << 40  # minutes of reading and hashing even from holes: far past the deadline
DOCK = "dock-stop-01"
T0 = 1_790_000_000_000_000
T0_DAY = dt.date(2026, 11, 20)
DEADLINE_S = 60.0  # generous: the job ends within one chunk once it sees the stop


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "dock.key"


@pytest.fixture
def ledger(key_path: Path) -> Ledger:
    return Ledger(DOCK, CheckpointSigner.from_file(key_path), checkpoint_every=4)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "state" / "dock.sqlite3", ALL_SCHEMAS)
    yield database
    database.close()


def huge_sparse(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as fh:
        fh.truncate(HUGE)
    return path


def store_huge(db: Database, ledger: Ledger, store: Path) -> Path:
    """A stored file of HUGE bytes (a hole) with its evidence record, as an offload leaves it;
    the recorded hash is that of other content, so a finished re-hash would say corrupt."""
    rel = layout_relpath("U01", "SER00001", "007", T0_DAY, b"BIG00001.MP4")
    path = huge_sparse(store / rel)
    os.chmod(path, 0o440)
    rec = StoredFileRecord(
        recorder_serial="SER00001", session_id="sess-1", bay="bay-1",
        source_name=b"BIG00001.MP4", stored_relpath=rel, size=HUGE, blake3_hex="ab" * 32,
        rec_start_us=T0, rec_end_us=T0 + 60_000_000, offload_start_us=T0 + 100,
        offload_end_us=T0 + 200, unit_no="U01", officer_no="007", officer_name="Li Wei",
        late=False, late_by_s=0.0, deadline_us=T0 + 86_400_000_000)
    db.write_sync(lambda c: commit_file(c, ledger, rec))
    return path



async def stop_inside(jobs: LongJobs, path: Path, job: Awaitable[object]) -> asyncio.Task[object]:
    """Run `job`, stop the agent's long jobs once it reads `path`, and wait for its end."""
    async def run() -> object:
        return await job

    task = asyncio.create_task(run())
    async with asyncio.timeout(DEADLINE_S):
        while not holds_open(path):
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
    assert await jobs.stop(timeout_s=DEADLINE_S), "the job did not see the stop inside the file"
    await asyncio.wait([task], timeout=DEADLINE_S)
    assert task.done()
    return task


def ledger_kinds(db: Database) -> list[str]:
    return [r[0] for r in db.read_sync(
        lambda c: c.execute("SELECT kind FROM ledger ORDER BY seq").fetchall())]


def open_codes(db: Database) -> list[str]:
    return [f.code for f in db.read_sync(lambda c: faults.open_faults(c))]


async def test_a_deep_verify_stopped_inside_one_file_judges_nothing(
        tmp_path: Path, db: Database, ledger: Ledger, key_path: Path) -> None:
    store = tmp_path / "evidence"
    path = store_huge(db, ledger, store)
    # an earlier finding stays open: a stopped verify must neither clear it nor add one
    await sync_integrity_fault(db, ledger, FaultCode.STORE_INTEGRITY, "evidence store",
                               [Problem("missing_file", "x", "an earlier finding")])
    before = ledger_kinds(db)
    settings = Settings(dock=DockSettings(id=DOCK, state_dir=tmp_path / "state",
                                          store_dir=store, key_file=key_path))
    jobs = LongJobs(1)

    async def no_assign(serial: str) -> bool:
        return False

    actions = AgentActions(settings, db, ledger, DockView(settings, SessionTable(),
                                                          RecorderFeed()),
                           assign_now=no_assign, jobs=jobs)
    task = await stop_inside(jobs, path, actions.run_verify(deep=True))
    with pytest.raises(CommandRejected, match="stopping"):
        task.result()
    assert ledger_kinds(db) == before
    assert open_codes(db) == [FaultCode.STORE_INTEGRITY.value]


async def test_a_fixity_audit_stopped_inside_one_file_records_no_run(
        tmp_path: Path, db: Database, ledger: Ledger) -> None:
    store = tmp_path / "evidence"
    path = store_huge(db, ledger, store)
    before = ledger_kinds(db)
    jobs = LongJobs(1)
    auditor = FixityAuditor(AuditSettings(max_mib_per_s=10000), db, ledger,
                            store_dir=store, jobs=jobs)
    task = await stop_inside(jobs, path, auditor.audit_slice())
    with pytest.raises(JobStopped):
        task.result()
    assert ledger_kinds(db) == before  # no audit_run, no store_integrity fault
    assert db.read_sync(
        lambda c: c.execute("SELECT COUNT(*) FROM audit_runs").fetchone()[0]) == 0
    assert open_codes(db) == []


async def test_an_export_read_back_stopped_inside_one_file_gives_no_verdict(
        tmp_path: Path) -> None:
    src = tmp_path / "small.MP4"
    src.write_bytes(b"footage")
    key = Ed25519PrivateKey.generate()
    work = tmp_path / "usb" / ".partial-export"
    work.parent.mkdir()
    package.write_package(work, [package.SourceFile(
        src, "U01/small.MP4", 7, blake3(b"footage").hexdigest(), {})], {}, key)
    # the target's copy is now one huge file being re-read
    copy = work / package.FILES_DIR / "U01" / "small.MP4"
    copy.unlink()
    huge_sparse(copy)
    jobs = LongJobs(1)
    task = await stop_inside(jobs, copy, jobs.run(
        lambda stop: package.verify_package(work, key.public_key(), stop=stop)))
    with pytest.raises(JobStopped):
        task.result()
