"""Helpers of the firmware tests: signed packages, the dock's trusted key, waits on the
agent's firmware records (read from its SQLite database, read-only)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_bridge.fwpackage import build_package, public_key_pem
from hw_sim.fwkeys import sim_vendor_key
from tests.e2e.harness import Rig, until

MODEL = "DSJ-SIM1"  # the simulated recorders' model
CREATED = "2026-11-01T00:00:00Z"


def firmware_section(root: Path, **overrides: Any) -> dict[str, Any]:
    key_file = root / "vendor-firmware.pem"
    key_file.write_bytes(public_key_pem(sim_vendor_key().public_key()))
    section: dict[str, Any] = {"trusted_keys": [key_file], "targets": {MODEL: "1.1.0"},
                               "min_battery_percent": 20, "chunk_timeout_s": 30.0}
    section.update(overrides)
    return section


def image(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def package(tmp: Path, size: int, *, version: str = "1.1.0", models: tuple[str, ...] = (MODEL,),
            min_from: str | None = "1.0.0", max_from: str | None = None,
            key: Ed25519PrivateKey | None = None, seed: int = 7, name: str | None = None
            ) -> Path:
    data = build_package(image(size, seed), vendor="SimVendor", models=models, version=version,
                         min_from=min_from, max_from=max_from,
                         private_key=key or sim_vendor_key(), created=CREATED)
    path = tmp / (name or f"fw-{version}-{seed}.dfw")
    path.write_bytes(data)
    return path


def entries(rig: Rig, kind: str, serial: str | None = None) -> list[dict[str, Any]]:
    return [json.loads(r["data"]) | {"seq": r["seq"], "bay": r["bay"]}
            for r in rig.ledger(serial) if r["kind"] == kind]


def attempt(rig: Rig, serial: str) -> dict[str, Any] | None:
    rows = rig.query("SELECT * FROM firmware_attempts WHERE recorder = ? ORDER BY id DESC"
                     " LIMIT 1", (serial,))
    return dict(rows[0]) if rows else None


async def wait_kind(rig: Rig, kind: str, serial: str, count: int = 1,
                    timeout: float = 240.0) -> None:
    await until(lambda: len(entries(rig, kind, serial)) >= count, f"{count} x {kind}",
                timeout=timeout, agent=rig.agent)


async def wait_bytes(rig: Rig, serial: str, at_least: int, timeout: float = 240.0) -> None:
    def past() -> bool:
        a = attempt(rig, serial)
        return a is not None and a["state"] == "transferring" and a["bytes_done"] >= at_least
    await until(past, f"transfer of {serial} past {at_least} bytes", timeout=timeout,
                agent=rig.agent)
