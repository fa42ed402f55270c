"""A small typed table layer: rows in and out as frozen dataclasses, filters as data.

A `Table` declares a table's name and columns once, with the dataclass field each column
fills and how its stored value is decoded. Every statement is assembled here from those
declared names only: callers name columns, and a name the table does not declare is
refused (`TableError`), so no identifier ever comes from input. Values are always bound
as parameters, never formatted into SQL.

    FAULTS = Table("faults", Fault, (Column("id"), Column("detail", decode=_json), ...))
    FAULTS.select(conn, Where().eq("recorder", serial).null("cleared_us"), order="id")
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agent.store.errors import TableError

T = TypeVar("T")

_IDENT = re.compile(r"[a-z_][a-z0-9_]*")
# The only comparison operators a filter may use; each takes one bound value.
_OPERATORS = frozenset({"=", "IS", "<", "<=", ">", ">="})
Order = str | tuple[str, ...] | None


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Column:
    """One declared column: `field` is the dataclass field it fills (default: its name)."""

    name: str
    field: str = ""
    decode: Callable[[Any], Any] = _same

    @property
    def attr(self) -> str:
        return self.field or self.name


@dataclass
class Where:
    """A conjunction of column comparisons; methods chain. Rendered by a `Table`."""

    terms: list[tuple[str, str, object]] = field(default_factory=list)

    def compare(self, column: str, op: str, value: object) -> Where:
        self.terms.append((column, op, value))
        return self

    def eq(self, column: str, value: object) -> Where:
        return self.compare(column, "=", value)

    def eq_given(self, **values: object) -> Where:
        """`column = value` for each value that is not None (an absent filter)."""
        for column, value in values.items():
            if value is not None:
                self.eq(column, value)
        return self

    def is_(self, column: str, value: object) -> Where:
        """`column IS value`: matches NULL when value is None."""
        return self.compare(column, "IS", value)

    def at_least(self, column: str, value: object | None) -> Where:
        return self if value is None else self.compare(column, ">=", value)

    def at_most(self, column: str, value: object | None) -> Where:
        return self if value is None else self.compare(column, "<=", value)

    def below(self, column: str, value: object | None) -> Where:
        return self if value is None else self.compare(column, "<", value)

    def above(self, column: str, value: object | None) -> Where:
        return self if value is None else self.compare(column, ">", value)

    def null(self, column: str) -> Where:
        return self.compare(column, "IS", None)


class Table(Generic[T]):
    """A declared table mapped to the dataclass `row_type` (see the module docstring)."""

    def __init__(self, name: str, row_type: Callable[..., T],
                 columns: Sequence[Column | str], *, keys: Sequence[str] = ()) -> None:
        """`keys`: further columns that filters, order and inserts may name but that
        are not part of the typed row (a surrogate id, the owner of a history)."""
        self.name = self._ident(name)
        self.row_type = row_type
        self.columns = tuple(c if isinstance(c, Column) else Column(c) for c in columns)
        self.names = tuple(self._ident(c.name) for c in self.columns)
        self._known = frozenset(self.names) | {self._ident(k) for k in keys}
        self._attrs = tuple(c.attr for c in self.columns)
        self._decode_at = tuple((i, c.decode) for i, c in enumerate(self.columns)
                                if c.decode is not _same)
        # Rows whose columns are the dataclass's leading fields, in order, are built
        # positionally (the outbox is read at publishing rate).
        leading = ([f.name for f in dataclasses.fields(row_type) if f.init]
                   if dataclasses.is_dataclass(row_type) else [])
        self._positional = list(self._attrs) == leading[:len(self._attrs)]
        self._inserts: dict[tuple[str, ...], str] = {}
        self._selects: dict[tuple[object, ...], str] = {}
        self._select = f"SELECT {', '.join(self.names)} FROM {self.name}"  # noqa: S608

    @staticmethod
    def _ident(name: str) -> str:
        if not _IDENT.fullmatch(name):
            raise TableError(f"{name!r} is not a plain SQL identifier")
        return name

    def _column(self, name: str) -> str:
        if name not in self._known:
            raise TableError(f"table {self.name} declares no column {name!r}")
        return name

    def load(self, row: Sequence[Any]) -> T:
        """The typed row of a result in declared column order."""
        values = list(row)
        if len(values) != len(self._attrs):
            raise TableError(f"a row of {self.name} has {len(values)} values,"
                             f" not {len(self._attrs)}")
        for i, decode in self._decode_at:
            values[i] = decode(values[i])
        if self._positional:
            return self.row_type(*values)
        return self.row_type(**dict(zip(self._attrs, values, strict=True)))

    def where_sql(self, where: Where | None) -> tuple[str, list[object]]:
        """` WHERE a = ? AND b IS ?` (or "") and its bound values."""
        if where is None or not where.terms:
            return "", []
        parts: list[str] = []
        for column, op, _ in where.terms:
            if op not in _OPERATORS:
                raise TableError(f"operator {op!r} is not allowed in a filter")
            parts.append(f"{self._column(column)} {op} ?")
        return " WHERE " + " AND ".join(parts), [value for _, _, value in where.terms]

    def rows(self, conn: sqlite3.Connection, where: Where | None = None, *,
             order: Order = None, desc: bool = False,
             limit: int | None = None) -> sqlite3.Cursor:
        """The raw result rows (declared column order) of a filtered select, ordered by
        one column or several (all ascending, or all descending with `desc`)."""
        terms = () if where is None else tuple((c, op) for c, op, _ in where.terms)
        shape = (terms, order, desc, limit is not None)
        sql = self._selects.get(shape)
        if sql is None:  # once per statement shape: the outbox is read at publishing rate
            sql = self._select + self.where_sql(where)[0]
            if order is not None:
                direction = " DESC" if desc else ""
                keys = (order,) if isinstance(order, str) else order
                sql += " ORDER BY " + ", ".join(self._column(k) + direction for k in keys)
            if limit is not None:
                sql += " LIMIT ?"
            self._selects[shape] = sql
        args = [] if where is None else [value for _, _, value in where.terms]
        if limit is not None:
            args.append(int(limit))
        return conn.execute(sql, args)

    def select(self, conn: sqlite3.Connection, where: Where | None = None, *,
               order: Order = None, desc: bool = False,
               limit: int | None = None) -> list[T]:
        return [self.load(r) for r in self.rows(conn, where, order=order, desc=desc,
                                                 limit=limit)]

    def first(self, conn: sqlite3.Connection, where: Where | None = None, *,
              order: Order = None, desc: bool = False) -> T | None:
        row = self.rows(conn, where, order=order, desc=desc, limit=1).fetchone()
        return None if row is None else self.load(row)

    def insert(self, conn: sqlite3.Connection, values: Mapping[str, object]) -> int:
        """Insert one row of declared columns (others take their defaults); the rowid."""
        names = tuple(values)
        sql = self._inserts.get(names)
        if sql is None:  # once per column set: ledger and outbox rows are written often
            cols = ", ".join(self._column(c) for c in names)
            sql = self._inserts[names] = (f"INSERT INTO {self.name} ({cols})"  # noqa: S608
                                          f" VALUES ({', '.join('?' * len(names))})")
        rowid = conn.execute(sql, tuple(values.values())).lastrowid
        assert rowid is not None
        return rowid


__all__ = ["Column", "Table", "TableError", "Where"]
