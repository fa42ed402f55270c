"""The dock's firmware service: the session's hook, staging, central policy and status.

`after_offload` is the one call a docking session makes (after its footage is offloaded
and verified). It reads the recorder's firmware status, settles the dock's open attempt
(completed / rolled back / failed after a reboot), checks the allowlist, and runs an update
when policy allows. It never raises (except cancellation): a firmware problem is a record
and a fault, never a failed docking, and it touches nothing shared with other bays.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.compliance.firmware import firmware_problem, with_central_allowlists
from agent.compliance.versions import same_version
from agent.firmware import policy as pol
from agent.firmware import store
from agent.firmware.errors import PolicyError, StagingError, UpdateRefused
from agent.firmware.hook import DockedRecorder
from agent.firmware.keys import load_trusted_keys
from agent.firmware.ports import (
    LAST_RESULT_ROLLED_BACK,
    LAST_RESULT_SELF_TEST_FAILED,
    FirmwareLink,
    StatusLike,
)
from agent.firmware.records import UpdateRecords, Who
from agent.firmware.staging import record_staged, verify_and_copy
from agent.firmware.status import (
    DockedFacts,
    docked_from_snapshots,
    public_field,
    recorder_firmware,
    status_report,
)
from agent.firmware.updater import Progress, UpdateJob, run_update
from agent.settings import FirmwareSettings, ReadinessSettings, Settings
from agent.store.db import Database
from agent.store.ledger import EntryKind, Ledger, current_us
from firmware_bridge.errors import LinkClosed, LinkTimeout

log = logging.getLogger(__name__)
STATE_REFRESH_S = 1.0  # a transfer's progress refreshes the recorder's state this often


@dataclass(frozen=True)
class FirmwareConfig:
    settings: FirmwareSettings
    readiness: ReadinessSettings  # its firmware_allowlist and allowed_firmware
    firmware_dir: Path
    tz: ZoneInfo
    keys: Mapping[str, Ed25519PublicKey]

    @property
    def allowlists(self) -> Mapping[str, Sequence[str]]:
        """[readiness] firmware_allowlist."""
        return self.readiness.firmware_allowlist

    def limits(self) -> pol.Limits:
        s = self.settings
        return pol.Limits(s.auto_update, float(s.min_battery_percent),
                          tuple(pol.parse_window(w) for w in s.shift_start_windows),
                          s.max_attempts)


@dataclass(frozen=True)
class Judged:
    """One docking's firmware decision and the recorder facts it was made on."""

    session_id: str
    facts: pol.RecorderFacts
    decision: pol.Decision


def validate_config(settings: FirmwareSettings) -> None:
    """Refuse a malformed [firmware] section at start (PolicyError names the key)."""
    for w in settings.shift_start_windows:
        pol.parse_window(w)
    for model, version in settings.targets.items():
        pol.check_version(version, f"[firmware] targets.{model}")


class FirmwareService:
    def __init__(self, config: FirmwareConfig, db: Database, ledger: Ledger, *,
                 local_now: Callable[[ZoneInfo], dt.datetime] = dt.datetime.now) -> None:
        self.config = config
        self.db = db
        self.records = UpdateRecords(db, ledger)
        self.ledger = ledger
        self._local_now = local_now
        self.in_flight: dict[str, Progress] = {}  # serial -> transfer progress
        self.judged: dict[str, Judged] = {}  # serial -> its docking's decision
        self.central: dict[str, pol.ModelPolicy] = {}  # the persisted overrides, cached

    async def load(self) -> None:
        """Read the central overrides (once at start; set_policy keeps the cache)."""
        self.central = await self.db.read(_central)

    def policies(self) -> dict[str, pol.ModelPolicy]:
        return pol.effective_policies(self.config.settings.targets, self.config.allowlists,
                                      self.central)

    def readiness(self, settings: ReadinessSettings) -> ReadinessSettings:
        """Readiness settings whose per-model allowlists include the central overrides, so a
        recorder outside a centrally set allowlist is NOT_READY (and gets its fault at
        identification) like one outside the config's."""
        return with_central_allowlists(settings, {model: p.allowlist
                                                  for model, p in self.central.items()})

    def firmware_problem(self, model: str, firmware: str) -> str | None:
        """Why this firmware is not allowed on this dock now (config and central lists), or
        None: the rule readiness and the identify-time fault use."""
        return firmware_problem(self.readiness(self.config.readiness), model, firmware)

    def recorder_field(self, snap: Mapping[str, object]) -> dict[str, object] | None:
        """The `firmware_update` field of one docked recorder's state (None: unidentified)."""
        docked = docked_from_snapshots([snap])
        if not docked:
            return None
        d = docked[0]
        return public_field(recorder_firmware(d, self.policies(), self.decisions([d]).get(
            d.serial), self.in_flight.get(d.serial), None, self.firmware_problem))

    def decisions(self, docked: Sequence[DockedFacts]) -> dict[str, pol.Decision]:
        """The decision of each docked recorder's current docking (an earlier docking's
        decision is not this one's: until the offload ends there is none)."""
        out: dict[str, pol.Decision] = {}
        for d in docked:
            judged = self.judged.get(d.serial)
            if judged is not None and judged.session_id == d.session_id:
                out[d.serial] = judged.decision
        return out

    # --- the session's hook -----------------------------------------------------------

    async def after_offload(self, rec: DockedRecorder) -> None:
        try:
            await self._after_offload(rec)
        except asyncio.CancelledError:
            raise
        except (LinkClosed, LinkTimeout, TimeoutError, OSError) as exc:
            # unplugged or silent mid-way: the recorder keeps its durable offset, the dock
            # its open attempt; the next docking resumes
            log.info("bay %s: firmware update of %s interrupted: %s", rec.bay, rec.serial,
                     exc or type(exc).__name__)
            self._ended(rec.serial, "wait", "the update was interrupted; the next docking"
                        " resumes it")
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from exc  # the unplug's cancel stays a cancel
        except Exception:  # a bug here must never fail the docking
            log.exception("bay %s: firmware check of %s failed", rec.bay, rec.serial)
            self._ended(rec.serial, "blocked", "the firmware check failed (see the agent's"
                        " log)")
        finally:
            self.in_flight.pop(rec.serial, None)
            rec.changed()

    def _ended(self, serial: str, action: pol.Action, reason: str) -> None:
        """An update decided for this docking will not run (on): the recorder no longer
        reads as being updated."""
        judged = self.judged.get(serial)
        if judged is not None and judged.decision.action == "update":
            self.judged[serial] = replace(judged, decision=pol.Decision(
                action, reason, judged.decision.package))

    async def _after_offload(self, rec: DockedRecorder) -> None:
        link = rec.link
        if not isinstance(link, FirmwareLink):
            return  # a link without firmware commands: nothing to check or update
        who = Who(rec.serial, rec.bay, rec.session_id, rec.officer)
        async with asyncio.timeout(self.config.settings.chunk_timeout_s):
            status = await link.firmware_status()
        running = status.running_version or rec.firmware
        attempt = await self.db.read(lambda c: _open_attempt(c, rec.serial))
        if attempt is not None and await self._settle(who, attempt, status, running):
            attempt = None
        policies = await self.db.read(self._policies)
        model_policy = policies.get(rec.model)  # allowlists, config and central: identify's
        packages, fails, rolled = await self.db.read(lambda c: (
            store.packages(c), store.failures(c, rec.serial), store.rolled_back(c, rec.serial)))
        facts = pol.RecorderFacts(rec.serial, rec.model, running, rec.battery_percent,
                                  rec.footage_safe, fails, rolled)
        now = self._local_now(self.config.tz).time()
        decision = pol.decide(facts, model_policy, [p.facts for p in packages],
                              self.config.limits(), now, self.firmware_problem)
        self.judged[rec.serial] = Judged(rec.session_id, facts, decision)
        rec.changed()
        if decision.action == "blocked" and decision.package is not None:
            await self.records.blocked(who, decision.reason, {"model": rec.model,
                                                              "firmware": running})
        if decision.action != "update" or decision.package is None:
            return
        staged = next(p for p in packages if p.facts.blake3 == decision.package.blake3)
        await self._update(link, rec.serial, who, running, staged, attempt, rec.changed)

    async def _settle(self, who: Who, attempt: store.Attempt, status: StatusLike,
                      running: str) -> bool:
        """Settle the dock's open attempt from what the recorder reports; True if settled."""
        rolled = status.last_result in (LAST_RESULT_ROLLED_BACK, LAST_RESULT_SELF_TEST_FAILED)
        if attempt.state == "rebooting" and rolled:
            why = ("the new image failed its self-test" if status.last_result
                   == LAST_RESULT_SELF_TEST_FAILED else "the new image did not boot")
            await self.records.ended_badly(
                who, attempt, rolled_back=True,
                reason=f"{why}: the recorder rolled back to {running} (slot"
                       f" {status.active_slot})",
                detail={"running_version": running, "last_result": status.last_result})
            return True
        if same_version(running, attempt.to_version):
            await self.records.completed(who, attempt, running)
            return True
        if attempt.state == "rebooting":
            await self.records.ended_badly(
                who, attempt, rolled_back=False,
                reason=f"after the reboot the recorder runs {running}, not"
                       f" {attempt.to_version}",
                detail={"running_version": running, "last_result": status.last_result})
            return True
        return False  # a transfer cut short: the decision below may resume it

    async def _update(self, link: FirmwareLink, serial: str, who: Who, running: str,
                      staged: store.StagedPackage, attempt: store.Attempt | None,
                      changed: Callable[[], None]) -> None:
        if attempt is not None and attempt.package != staged.facts.blake3:
            await self.records.ended_badly(
                who, attempt, rolled_back=False, reason="superseded by package"
                f" {staged.facts.version} before it completed", detail={}, fault=False)
            attempt = None
        job = UpdateJob(link, who, running, staged, self.config.firmware_dir / staged.file,
                        attempt, self.config.settings.chunk_timeout_s)

        last = [0.0]

        def progress(p: Progress) -> None:
            self.in_flight[serial] = p
            now = time.monotonic()
            if now - last[0] >= STATE_REFRESH_S:  # the retained state, not every chunk
                last[0] = now
                changed()

        try:
            await run_update(job, self.records, progress)
        except UpdateRefused as exc:
            await self._refused(who, job, str(exc))
            # no longer updating (the recorder may be taken); the next docking decides again
            self._ended(serial, "blocked", f"the update to {staged.facts.version} failed: {exc}")

    async def _refused(self, who: Who, job: UpdateJob, reason: str) -> None:
        attempt = await self.db.read(lambda c: _open_attempt(c, who.serial))
        if attempt is None:  # refused at begin: record the attempt that never started
            attempt = await self.records.start(who, job.package.facts, job.running, 0, None)
        await self.records.ended_badly(who, attempt, rolled_back=False, reason=reason,
                                       detail={})

    # --- policy, staging ----------------------------------------------------------------

    async def decide_again(self) -> None:
        """The policy changed: decide again for every recorder decided at its docking, with
        the one firmware rule and the policy in force now, so that no reason of the old
        policy stays on show until the next docking. An update under way is left to end;
        one the new policy would start waits for the recorder's next docking (this
        docking's update step is over)."""
        judged = {s: j for s, j in self.judged.items() if j.decision.action != "update"}
        policies, packages, history = await self.db.read(lambda c: (
            self._policies(c), [p.facts for p in store.packages(c)],
            {s: (store.failures(c, s), store.rolled_back(c, s)) for s in judged}))
        now = self._local_now(self.config.tz).time()
        for serial, j in judged.items():
            if self.judged.get(serial) is not j:
                continue  # decided anew meanwhile (a new docking): that decision stands
            facts = replace(j.facts, failures=history[serial][0],
                            rolled_back=history[serial][1])
            self.judged[serial] = Judged(j.session_id, facts, pol.decide_after_update_step(
                facts, policies.get(facts.model), packages, self.config.limits(), now,
                self.firmware_problem))

    def _policies(self, conn: sqlite3.Connection) -> dict[str, pol.ModelPolicy]:
        return pol.effective_policies(self.config.settings.targets, self.config.allowlists,
                                      _central(conn))

    def known_models(self, central: Mapping[str, pol.ModelPolicy]) -> frozenset[str]:
        return frozenset({*self.config.settings.targets, *self.config.allowlists, *central})

    async def stage(self, path: Path, source: str) -> dict[str, object]:
        """Verify and stage a package file; StagingError with a clear reason."""
        central = await self.db.read(_central)
        verified = await asyncio.to_thread(verify_and_copy, path, self.config.firmware_dir,
                                           self.config.keys, self.known_models(central))
        staged, new = await self.db.write(lambda c: record_staged(c, self.ledger, verified,
                                                                  source))
        return {**staged.as_dict(), "newly_staged": new}

    async def stage_from_share(self, name: str) -> dict[str, object]:
        """A package the central side names by file name in one of `import_dirs`."""
        if not name or "/" in name or name in (".", "..") or "\x00" in name:
            raise StagingError(f"{name!r} is not a plain file name")
        for d in self.config.settings.import_dirs:
            candidate = d / name
            if candidate.is_file():
                return await self.stage(candidate, f"share:{candidate}")
        dirs = ", ".join(str(d) for d in self.config.settings.import_dirs) or "none configured"
        raise StagingError(f"no package {name!r} in the import directories ({dirs})")

    async def set_policy(self, model: str, target: str | None,
                         allowlist: Sequence[str] | None, *, by: str) -> dict[str, object]:
        """The central override of one model (target and allowlist both None: remove it)."""
        if not model:
            raise PolicyError("model must not be empty")
        if target is not None:
            pol.check_version(target, "target")
        for v in allowlist or ():
            pol.check_version(v, "allowlist version")
        if target is not None and allowlist is None:
            _refuse_against_config(self.config.readiness, model, target)
        new = (None if target is None and allowlist is None
               else pol.ModelPolicy(target, tuple(allowlist) if allowlist is not None else None,
                                    "central"))

        def tx(conn: sqlite3.Connection) -> None:
            store.ensure_schema(conn)
            store.set_central_policy(conn, model, new, set_by=by, now_us=current_us())
            self.ledger.append(conn, EntryKind.FIRMWARE_POLICY_SET, data={
                "model": model, "target": target,
                "allowlist": list(allowlist) if allowlist is not None else None, "by": by})
        await self.db.write(tx)
        self.central = await self.db.read(_central)
        await self.decide_again()
        return {"model": model, "target": target,
                "allowlist": list(allowlist) if allowlist is not None else None,
                "cleared": new is None}


def _refuse_against_config(readiness: ReadinessSettings, model: str, target: str) -> None:
    """A central target without an allowlist of its own is judged by the dock's flat
    `allowed_firmware`: one that list refuses would never be installed, so the policy
    contradicts the dock's configuration and is refused (the one in force stays)."""
    problem = firmware_problem(with_central_allowlists(readiness, {model: None}), model, target)
    if problem is not None:
        raise PolicyError(
            f"target {target} contradicts this dock's [readiness] allowed_firmware"
            f" ({problem}): recorders of model {model!r} would never be updated to it;"
            " send an allowlist with the target or change the dock's configuration"
            " (the policy in force is unchanged)")


def _open_attempt(conn: sqlite3.Connection, serial: str) -> store.Attempt | None:
    return store.open_attempt(conn, serial)


def _central(conn: sqlite3.Connection) -> dict[str, pol.ModelPolicy]:
    return store.central_policies(conn)


class FirmwareControl:
    """The control socket's firmware commands (dockctl firmware add / status)."""

    def __init__(self, service: FirmwareService,
                 docked: Callable[[], Sequence[Mapping[str, object]]]) -> None:
        self.service = service
        self.docked = docked

    async def status(self) -> dict[str, object]:
        svc = self.service

        def read(conn: sqlite3.Connection) -> tuple[dict[str, pol.ModelPolicy],
                                                    list[store.Attempt],
                                                    list[store.StagedPackage]]:
            return svc._policies(conn), store.open_attempts(conn), store.packages(conn)

        policies, attempts, packages = await svc.db.read(read)
        docked = docked_from_snapshots(self.docked())
        return status_report(docked, policies, svc.decisions(docked),
                             dict(svc.in_flight), attempts, packages, svc.firmware_problem)

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]]]:
        async def add(req: dict[str, Any]) -> Mapping[str, Any]:
            path = req.get("package")
            if not isinstance(path, str) or not path.startswith("/"):
                raise StagingError("firmware-add needs the package's absolute path")
            return await self.service.stage(Path(path), "dockctl")

        async def status(_: dict[str, Any]) -> Mapping[str, Any]:
            return await self.status()

        return {"firmware-add": add, "firmware-status": status}


def make_service(settings: Settings, db: Database, ledger: Ledger) -> FirmwareService:
    """The service from the agent's settings; FirmwareError if [firmware] is unusable."""
    fw = settings.firmware
    validate_config(fw)
    config = FirmwareConfig(fw, settings.readiness,
                            settings.dock.state_dir / "firmware", ZoneInfo(settings.dock.timezone),
                            load_trusted_keys(fw.trusted_keys))
    return FirmwareService(config, db, ledger)
