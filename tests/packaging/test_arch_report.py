"""scripts/arch-report on a small tree with known problems, and its layer list in step with
docs/architecture.md."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "arch-report"


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("arch_report", str(SCRIPT))
    spec = importlib.util.spec_from_loader("arch_report", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["arch_report"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_report_finds_circles_upward_imports_sizes_complexity_and_any(tmp_path: Path) -> None:
    for pkg in ("agent", "agent/store", "agent/mqtt", "firmware_bridge"):
        _write(tmp_path, f"{pkg}/__init__.py", "")
    _write(tmp_path, "agent/a.py", "from agent import b\n")
    _write(tmp_path, "agent/b.py", "def f() -> None:\n    from agent import a  # lazy\n")
    _write(tmp_path, "agent/store/rows.py", "from agent.mqtt.topics import T\n")
    _write(tmp_path, "agent/mqtt/topics.py", "from typing import Any\nT: Any = 1\n"
           "U: dict[str, Any] = {}\n")
    long_body = "".join(f"    x{i} = {i}\n" for i in range(70))
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(20))
    _write(tmp_path, "agent/config.py",
           f"class Big:\n    def long(self) -> None:\n{long_body.replace('    ', '        ')}"
           f"\n\ndef branchy(x: int) -> int:\n{branches}    return -1\n")
    _write(tmp_path, "firmware_bridge/messages.py", "A = 1\nB = 2\nC = 3\n")
    out = subprocess.run([sys.executable, SCRIPT, "--root", tmp_path, "--top", "3"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["import_circles"] == [["agent.a", "agent.b"]]
    assert [(u["module"], u["imports"]) for u in report["upward_imports"]] == [
        ("agent.store.rows", "agent.mqtt.topics")]
    assert report["largest_classes"][0]["name"] == "agent.config:Big"
    assert report["functions_over_60"][0]["name"] == "agent.config:Big.long"
    assert report["functions_over_60"][0]["lines"] == 71
    assert [c["name"] for c in report["complexity_over_15"]] == ["branchy"]
    assert report["complexity_over_15"][0]["complexity"] == 21
    assert report["any_count"] == 2
    assert report["lines"] == {"firmware_bridge/messages.py": 3,
                               "agent/config": len((tmp_path / "agent/config.py")
                                                   .read_text().splitlines())}
    assert report["summary"]["import_circles"] == 1


def test_the_layers_in_the_docs_are_the_layers_checked() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers:start.*?```\n(.*?)```", text, re.S)
    assert block is not None
    documented = [tuple(p.strip() for p in line.split(None, 1)[1].split(","))
                  for line in block.group(1).splitlines() if line.strip()]
    assert documented == [tuple(layer) for layer in _script().LAYERS]


def test_every_project_module_has_a_declared_layer() -> None:
    script = _script()
    declared = {p for layer in script.LAYERS for p in layer}
    tops = {".".join(m.split(".")[:2]) for m in script.find_modules(REPO)}
    undeclared = {t for t in tops if t not in declared and t.split(".")[0] not in declared}
    assert undeclared == set()
