"""HIL fixtures: one qemu guest per test session, recorder images built on the host.

The tests that boot the guest (test_hil.py) run only when DOCK_HIL=1 (scripts/hil/run sets
it): they need root, qemu and the cached guest image (built on first use, minutes), which
an ordinary `scripts/test` run should not pay for. The image tests run everywhere.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .hil_session import Guest
from .hil_vm import ROOT, GuestVM, build_image

ENABLED = os.environ.get("DOCK_HIL") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    booted = {here / "test_hil.py", here / "test_hil_power.py"}
    for item in items:
        if Path(str(item.fspath)) in booted:
            item.add_marker(pytest.mark.hil)
            if not ENABLED:
                item.add_marker(pytest.mark.skip(
                    reason="hardware-in-the-loop: run scripts/hil/run (sets DOCK_HIL=1)"))


@pytest.fixture(scope="module")  # one module uses it; the power-cut trials boot their own
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    xchg = Path(os.environ.get("DOCK_HIL_XCHG") or tmp_path_factory.mktemp("hil-xchg"))
    image = build_image()
    # DOCK_HIL_SRC: run the guest against another checkout (e.g. to try a fix).
    # DOCK_HIL_INIT=shell: a small init script instead of systemd and the packaged units.
    systemd = os.environ.get("DOCK_HIL_INIT", "systemd") == "systemd"
    vm = GuestVM(image, xchg, src=Path(os.environ.get("DOCK_HIL_SRC") or ROOT), systemd=systemd)
    vm.start()
    print(f"\nHIL guest ready in {vm.boot_s:.1f} s: {vm.ready}", file=sys.stderr)
    with (xchg / "timings.jsonl").open("a") as fh:
        fh.write(json.dumps({"boot_s": round(vm.boot_s or 0, 1), **vm.ready}) + "\n")
    try:
        yield Guest(vm, xchg)
    finally:
        vm.stop()
