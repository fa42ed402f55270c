"""Schema files are plain, unambiguous JSON: a key given twice silently keeps only the
last value (a lost `required` once let a command without `args` through)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCHEMAS = sorted((Path(__file__).resolve().parents[2] / "agent" / "mqtt" / "schemas")
                 .glob("*.json"))


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    assert not dup, f"duplicate keys {dup}"
    return dict(pairs)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_file_has_no_duplicate_keys(path: Path) -> None:
    json.loads(path.read_text(), object_pairs_hook=_no_duplicates)
