"""The table layer builds SQL only from declared names and binds every value."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agent.store.errors import TableError
from agent.store.table import Column, Table, Where


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    flag: bool


ROWS = Table("t", Row, ("id", "name", Column("enabled", "flag", bool)))


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:")
    c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, enabled INTEGER)')
    return c


def test_rows_round_trip_through_the_declared_mapping(conn: sqlite3.Connection) -> None:
    assert ROWS.insert(conn, {"name": "a", "enabled": 1}) == 1
    ROWS.insert(conn, {"name": "b", "enabled": 0})
    assert ROWS.select(conn, order="id") == [Row(1, "a", True), Row(2, "b", False)]
    assert ROWS.first(conn, Where().eq("enabled", 0)) == Row(2, "b", False)
    assert ROWS.select(conn, Where().above("id", 1).at_most("id", None)) == [Row(2, "b", False)]
    assert ROWS.first(conn, order="id", desc=True) == Row(2, "b", False)
    assert ROWS.select(conn, Where().eq_given(name=None, id=1)) == [Row(1, "a", True)]


def test_values_are_bound_never_spliced(conn: sqlite3.Connection) -> None:
    hostile = "x'; DROP TABLE t; --"
    ROWS.insert(conn, {"name": hostile, "enabled": 0})
    assert ROWS.first(conn, Where().eq("name", hostile)) == Row(1, hostile, False)
    assert ROWS.select(conn, Where().eq("name", "x' OR '1'='1")) == []


@pytest.mark.parametrize("build", [
    lambda c: ROWS.select(c, Where().eq("name = name OR 1", 1)),
    lambda c: ROWS.select(c, order="id; DROP TABLE t"),
    lambda c: ROWS.select(c, Where().compare("id", "OR 1 OR", 1)),
    lambda c: ROWS.insert(c, {"name) VALUES (1); --": 1}),
])
def test_undeclared_columns_and_operators_are_refused(
        conn: sqlite3.Connection, build: Callable[[sqlite3.Connection], object]) -> None:
    with pytest.raises(TableError):
        build(conn)


def test_table_and_column_names_must_be_plain_identifiers() -> None:
    with pytest.raises(TableError):
        Table("t; --", Row, ("id",))
    with pytest.raises(TableError):
        Table("t", Row, ("id", "name text",))


def test_key_columns_filter_and_order_but_are_not_loaded(conn: sqlite3.Connection) -> None:
    @dataclass(frozen=True)
    class Named:
        name: str

    names = Table("t", Named, ("name",), keys=("id", "enabled"))
    for n, on in (("a", 1), ("b", 1), ("c", 0)):
        names.insert(conn, {"name": n, "enabled": on})
    assert names.select(conn, Where().eq("enabled", 1), order=("enabled", "id"),
                        desc=True) == [Named("b"), Named("a")]
    with pytest.raises(TableError):
        names.select(conn, order=("id", "nope"))
