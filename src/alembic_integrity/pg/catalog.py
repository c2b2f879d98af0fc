"""What the database has now, read from ``pg_catalog``.

Tables are resolved by the server (``to_regclass`` over ``format('%I')``),
so mixed-case, reserved and non-``public`` names need no quoting here, and
definitions are compared as PostgreSQL normalises them, never as typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from ..errors import CatalogError
from .identifiers import TableName, quote

_REGCLASS = (
    "to_regclass(CASE WHEN CAST(:schema AS text) IS NULL THEN format('%I', CAST(:table AS text)) "
    "ELSE format('%I.%I', CAST(:schema AS text), CAST(:table AS text)) END)"
)


UNDEFINED_COLUMN = "42703"


@dataclass(frozen=True)
class ConstraintState:
    oid: int
    name: str
    contype: str
    validated: bool
    definition: str


@dataclass(frozen=True)
class ForeignKeyState:
    columns: tuple[str, ...]
    referent_oid: int
    referent_columns: tuple[str, ...]
    ondelete: str
    onupdate: str
    match: str


def table_oid(conn: Connection, table: TableName) -> int | None:
    row = conn.execute(
        text(f"SELECT CAST({_REGCLASS} AS oid)"), {"schema": table.schema, "table": table.name}
    ).scalar()
    return int(row) if row else None


def require_table(conn: Connection, table: TableName, doing: str) -> int:
    oid = table_oid(conn, table)
    if oid is None:
        where = f"schema {table.schema!r}" if table.schema else "the search_path"
        raise CatalogError(
            f"{doing}: table {table} does not exist in {where}; create it first "
            f"or pass the right schema="
        )
    return oid


def constraint(conn: Connection, oid: int, name: str) -> ConstraintState | None:
    row = conn.execute(
        text(
            "SELECT c.oid, c.conname, c.contype, c.convalidated, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.conrelid = :rel AND c.conname = :name"
        ),
        {"rel": oid, "name": name},
    ).one_or_none()
    if row is None:
        return None
    definition = row[4].removesuffix(" NOT VALID")
    return ConstraintState(int(row[0]), row[1], row[2], bool(row[3]), definition)


def column_not_null(conn: Connection, oid: int, column: str) -> bool | None:
    """True/False for an existing column, None when the table has no such column."""
    return conn.execute(
        text(
            "SELECT attnotnull FROM pg_attribute "
            "WHERE attrelid = :rel AND attname = :col AND attnum > 0 AND NOT attisdropped"
        ),
        {"rel": oid, "col": column},
    ).scalar()


def primary_key(conn: Connection, oid: int) -> list[str]:
    """Primary key columns in key order; empty when the table has none."""
    rows = conn.execute(
        text(
            "SELECT a.attname FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = :rel AND i.indisprimary ORDER BY k.pos"
        ),
        {"rel": oid},
    ).scalars()
    return list(rows)


def foreign_key_state(conn: Connection, constraint_oid: int) -> ForeignKeyState:
    row = conn.execute(
        text(
            "SELECT ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
            "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
            "c.confrelid, "
            "ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i) "
            "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), "
            "c.confdeltype, c.confupdtype, c.confmatchtype "
            "FROM pg_constraint c WHERE c.oid = :oid"
        ),
        {"oid": constraint_oid},
    ).one()
    return ForeignKeyState(tuple(row[0]), int(row[1]), tuple(row[2]), row[3], row[4], row[5])


def quoted_columns(columns: list[str] | tuple[str, ...]) -> str:
    return ", ".join(quote(c) for c in columns)
