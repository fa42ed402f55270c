"""Guest side of the HIL request channel (runs inside qemu, on the guest's Debian python3).

The host drops `req/<id>.json` files ({"argv": [...], "timeout": s}) into the 9p exchange
directory; this loop runs each as `python3 <argv...>` from the working tree, with the
scenario's log in `res/<id>.log`, the JSON it writes to $HIL_RESULT in
`res/<id>.result.json`, and finally `res/<id>.json` ({"rc", "elapsed_s"}) - written last, so
its presence means the request is done. {"poweroff": true} ends the loop (and the guest).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SRC = Path("/mnt/src")


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _handle(req_file: Path, res: Path) -> bool:
    req_id = req_file.stem
    try:
        req = json.loads(req_file.read_text())
    except (OSError, ValueError) as exc:
        _write_json(res / f"{req_id}.json", {"rc": -1, "error": f"bad request: {exc}"})
        req_file.unlink(missing_ok=True)
        return True
    req_file.unlink(missing_ok=True)
    if req.get("poweroff"):
        _write_json(res / f"{req_id}.json", {"rc": 0, "elapsed_s": 0.0})
        return False
    started = time.monotonic()
    env = {**os.environ, "HIL_RESULT": str(res / f"{req_id}.result.json")}
    with (res / f"{req_id}.log").open("wb") as log:
        try:
            rc = subprocess.run(
                [sys.executable, *req["argv"]], cwd=SRC, env=env, stdout=log,
                stderr=subprocess.STDOUT, timeout=float(req.get("timeout", 600)), check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -9
            log.write(b"\nhil runner: scenario timed out\n")
    _write_json(res / f"{req_id}.json", {"rc": rc, "elapsed_s": time.monotonic() - started})
    return True


def main() -> int:
    xchg = Path(sys.argv[1])
    req, res = xchg / "req", xchg / "res"
    req.mkdir(exist_ok=True)
    res.mkdir(exist_ok=True)
    udcs = sorted(p.name for p in Path("/sys/class/udc").iterdir())
    _write_json(xchg / "ready.json", {"kernel": platform.release(), "uptime_s": _uptime(),
                                      "udcs": udcs, "python": platform.python_version()})
    print(f"hil runner ready after {_uptime():.1f} s, UDCs {udcs}", flush=True)
    while True:
        pending = sorted(p for p in req.iterdir() if p.suffix == ".json")
        if not pending:
            time.sleep(0.1)
            continue
        for f in pending:
            if not _handle(f, res):
                print("hil runner: power off", flush=True)
                return 0


if __name__ == "__main__":
    sys.exit(main())
