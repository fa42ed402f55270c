"""Whatever the bytes, the loader either builds Settings or raises ConfigInvalid."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import ConfigInvalid, KeyLines, parse_settings
from agent.settings import Settings

EXAMPLE = (Path(__file__).resolve().parents[2] / "config" / "dock-agent.example.toml").read_text()
LINES = EXAMPLE.splitlines()

edits = st.lists(
    st.tuples(
        st.integers(0, len(LINES) - 1),
        st.sampled_from(["delete", "uncomment", "dup", "insert"]),
        st.text(alphabet='[]{}"=#.,0123456789abcdefz \n-_', max_size=12),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_mutated_example_never_crashes(changes: list[tuple[int, str, str]]) -> None:
    lines = list(LINES)
    for index, op, text in changes:
        index %= len(lines) or 1
        if not lines:
            lines.append(text)
        elif op == "delete":
            del lines[index]
        elif op == "uncomment":
            lines[index] = lines[index].lstrip("# ")
        elif op == "dup":
            lines.insert(index, lines[index])
        else:
            lines[index] = lines[index][: len(text)] + text
    source = "\n".join(lines)
    try:
        result = parse_settings(source, check_files=False)
    except ConfigInvalid as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.line is None or 1 <= issue.line <= source.count("\n") + 1
    else:
        assert isinstance(result, Settings)


@given(st.text(max_size=300))
def test_key_locator_accepts_any_text(text: str) -> None:
    KeyLines(text).find("dock.id")
