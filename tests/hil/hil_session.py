"""The booted HIL guest as the tests see it: recorder images prepared on the host, scenarios
run in the guest (tests/hil/guest/scenario.py), their findings returned as JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent / "guest"))

from hil_specs import recorder_spec

from hw_sim.footage import expected_files
from hw_sim.storage import RecorderStorage

from .hil_fat import ImageFile, build_fat_image, image_files
from .hil_vm import GuestResult, GuestVM


@dataclass
class RecorderImage:
    serial: str
    sizes: list[int]
    image: str  # relative to the exchange directory
    partitioned: bool
    files: list[ImageFile]  # what the medium really holds, read back with mtools


class Guest:
    """The booted guest plus helpers to prepare recorders and run scenarios."""

    def __init__(self, vm: GuestVM, xchg: Path) -> None:
        self.vm = vm
        self.xchg = xchg

    def recorder_image(self, serial: str, sizes: list[int], *, partitioned: bool,
                       size_mib: int = 64) -> RecorderImage:
        spec = recorder_spec(serial, sizes)
        storage = RecorderStorage(spec, self.xchg / "recorders" / serial)
        storage.materialise()
        name = f"{serial}-{'part' if partitioned else 'disk'}.img"
        build_fat_image(self.xchg / name, storage.backing, size_mib=size_mib,
                        partitioned=partitioned)
        files = image_files(self.xchg / name, partitioned=partitioned)
        # The medium holds exactly the generator's footage, bit for bit.
        want = sorted((f.name.decode(), f.size, f.blake3.hex()) for f in expected_files(spec))
        assert [(f.name, f.size, f.blake3) for f in files] == want
        return RecorderImage(serial, sizes, name, partitioned, files)

    def scenario(self, name: str, params: dict[str, Any], timeout_s: float = 600) -> GuestResult:
        pfile = self.xchg / f"params-{params.get('name', name)}.json"
        pfile.write_text(json.dumps(params))
        res = self.vm.run(["tests/hil/guest/scenario.py", name, f"/mnt/xchg/{pfile.name}"],
                          timeout_s=timeout_s)
        report = self.xchg / "timings.jsonl"
        with report.open("a") as fh:
            fh.write(json.dumps({"scenario": params.get("name", name),
                                 "elapsed_s": round(res.elapsed_s, 1)}) + "\n")
        if res.rc != 0 or "error" in res.result:
            raise AssertionError(f"guest scenario {name} failed (rc {res.rc}): "
                                 f"{res.result.get('error')}\n{res.log[-6000:]}")
        return res
