"""The central service's firmware commands (docs/mqtt.md): set-firmware-policy and
stage-firmware. FirmwareError names why a command is refused; nothing changes then."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.firmware import store
from agent.firmware.errors import PolicyError
from agent.firmware.service import FirmwareService


async def run_command(service: FirmwareService, name: str,
                      args: Mapping[str, Any]) -> dict[str, Any]:
    if name == "stage-firmware":
        return dict(await service.stage_from_share(str(args["file"])))
    if name != "set-firmware-policy":
        raise PolicyError(f"unknown firmware command {name!r}")
    model = str(args["model"])
    target = args.get("target")
    allowlist = args.get("allowlist")
    package = args.get("package")
    if package is not None:
        staged = await service.db.read(lambda c: store.get_package(c, str(package)))
        if staged is None:
            raise PolicyError(f"no staged package {package}")
        if model not in staged.facts.models:
            raise PolicyError(f"package {staged.facts.version} is not for model {model!r}"
                              f" (it is for {', '.join(staged.facts.models)})")
        if target is not None and target != staged.facts.version:
            raise PolicyError(f"target {target} disagrees with the package's version"
                              f" {staged.facts.version}")
        target = staged.facts.version
    return dict(await service.set_policy(
        model, None if target is None else str(target),
        None if allowlist is None else [str(v) for v in allowlist], by="central"))
