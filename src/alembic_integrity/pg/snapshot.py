"""A fingerprint of a database's schema, read from ``pg_catalog``, and its differences.

``verify`` re-runs each revision and must prove the second run changed
nothing, so the snapshot holds everything a revision can change in the
schema: schemas, relations, columns (type, nullability, default, identity),
constraints (definition, validity), indexes and enum types, plus, with
``count_rows=True``, the row count of every table (a data migration that
inserts again on a re-run). OIDs and column numbers are kept too: a
constraint dropped and re-created with the same definition is a change (its
lock was taken, its validation scan ran again), and so is a column dropped
and added back. Compare with ``oids=False`` where re-creation is expected
(downgrade to base, then upgrade again).

Names are as PostgreSQL stores them; definitions as ``pg_get_constraintdef``
/ ``pg_get_indexdef`` / ``format_type`` / ``pg_get_expr`` print them, so two
snapshots compare equal exactly when the catalog agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from sqlalchemy import Connection, text

from .catalog import CONSTRAINT_KINDS, ConstraintState, not_null_sql

__all__ = [
    "ColumnState",
    "ConstraintState",
    "IndexState",
    "RelationState",
    "SchemaSnapshot",
    "differences",
    "take",
]

Key = tuple[str, ...]

_USER_SCHEMAS = "n.nspname NOT LIKE 'pg!_%' ESCAPE '!' AND n.nspname <> 'information_schema'"
_RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
             "S": "sequence", "f": "foreign table"}


@dataclass(frozen=True)
class RelationState:
    kind: str
    oid: int = field(compare=False)


@dataclass(frozen=True)
class ColumnState:
    type: str
    not_null: bool  # and validated (PostgreSQL 18 sets attnotnull for a NOT VALID one too)
    default: str | None
    identity: str
    generated: str
    position: int = field(compare=False)


@dataclass(frozen=True)
class IndexState:
    definition: str
    valid: bool
    oid: int = field(compare=False)


@dataclass(frozen=True)
class SchemaSnapshot:
    """What the catalog says, keyed by (schema, table[, name]) so differences read well."""

    schemas: frozenset[str]
    relations: Mapping[Key, RelationState]
    columns: Mapping[Key, ColumnState]
    constraints: Mapping[Key, ConstraintState]
    indexes: Mapping[Key, IndexState]
    enums: Mapping[Key, tuple[str, ...]]
    rows: Mapping[Key, int] = field(default_factory=dict)

    def without_tables(self, names: Iterable[tuple[str | None, str]]) -> SchemaSnapshot:
        """The snapshot minus some tables (e.g. Alembic's version table), ``None`` = any schema."""
        drop = list(names)

        def kept(key: Key) -> bool:
            return not any(key[1] == table and schema in (None, key[0]) for schema, table in drop)

        return SchemaSnapshot(
            self.schemas,
            {k: v for k, v in self.relations.items() if kept(k)},
            {k: v for k, v in self.columns.items() if kept(k)},
            {k: v for k, v in self.constraints.items() if kept(k)},
            {k: v for k, v in self.indexes.items() if kept(k)},
            self.enums,
            {k: v for k, v in self.rows.items() if kept(k)},
        )

    @property
    def table_count(self) -> int:
        return sum(1 for r in self.relations.values() if r.kind in ("table", "partitioned table"))


# --------------------------------------------------------------------------- reading


def take(conn: Connection, *, count_rows: bool = False) -> SchemaSnapshot:
    """Read the snapshot in one transaction (rolled back: reading changes nothing)."""
    with conn.begin() as tx:
        snapshot = SchemaSnapshot(
            schemas=frozenset(_scalars(conn, f"SELECT n.nspname FROM pg_namespace n "
                                             f"WHERE {_USER_SCHEMAS}")),
            relations=_relations(conn),
            columns=_columns(conn),
            constraints=_constraints(conn),
            indexes=_indexes(conn),
            enums=_enums(conn),
            rows=_row_counts(conn) if count_rows else {},
        )
        tx.rollback()
    return snapshot


def _scalars(conn: Connection, sql: str) -> list[str]:
    return [row[0] for row in conn.execute(text(sql))]


def _relations(conn: Connection) -> dict[Key, RelationState]:
    rows = conn.execute(text(
        "SELECT n.nspname, c.relname, c.relkind, c.oid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMAS}"))
    return {(r[0], r[1]): RelationState(_RELKINDS[r[2]], int(r[3])) for r in rows}


def _columns(conn: Connection) -> dict[Key, ColumnState]:
    rows = conn.execute(text(
        "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
        f"{not_null_sql(conn, 'a')}, pg_get_expr(d.adbin, d.adrelid), a.attidentity, "
        "a.attgenerated, a.attnum "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        f"AND {_USER_SCHEMAS}"))
    return {(r[0], r[1], r[2]): ColumnState(r[3], bool(r[4]), r[5], r[6] or "", r[7] or "",
                                            int(r[8])) for r in rows}


def _constraints(conn: Connection) -> dict[Key, ConstraintState]:
    rows = conn.execute(text(
        "SELECT n.nspname, c.relname, k.conname, k.contype, k.convalidated, "
        "pg_get_constraintdef(k.oid), k.oid FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE {_USER_SCHEMAS}"))
    return {(r[0], r[1], r[2]): ConstraintState(CONSTRAINT_KINDS.get(r[3], str(r[3])), bool(r[4]),
                                                r[5].removesuffix(" NOT VALID"), int(r[6]),
                                                r[2]) for r in rows}


def _indexes(conn: Connection) -> dict[Key, IndexState]:
    rows = conn.execute(text(
        "SELECT n.nspname, t.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid, i.oid "
        "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        f"WHERE {_USER_SCHEMAS}"))
    return {(r[0], r[1], r[2]): IndexState(r[3], bool(r[4]), int(r[5])) for r in rows}


def _enums(conn: Connection) -> dict[Key, tuple[str, ...]]:
    rows = conn.execute(text(
        "SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) "
        "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
        f"JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_USER_SCHEMAS} GROUP BY 1, 2"))
    return {(r[0], r[1]): tuple(r[2]) for r in rows}


def _row_counts(conn: Connection) -> dict[Key, int]:
    """Every table's ``count(*)`` in ONE round trip (``query_to_xml`` runs each count)."""
    rows = conn.execute(text(
        "SELECT n.nspname, c.relname, (xpath('/row/n/text()', query_to_xml("
        "format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')"
        "))[1]::text::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}"))
    return {(r[0], r[1]): int(r[2]) for r in rows}


# --------------------------------------------------------------------------- comparing


def differences(before: SchemaSnapshot, after: SchemaSnapshot, *, oids: bool = True,
                rows: bool = True) -> list[str]:
    """One readable line per difference, empty when the snapshots agree.

    ``oids=False`` ignores re-creation (new OIDs, column positions); ``rows=False``
    ignores row counts.
    """
    lines = [f"schema {name} {'added' if name in after.schemas else 'removed'}"
             for name in sorted(before.schemas ^ after.schemas)]
    lines += _compare("", before.relations, after.relations, oids, _relation_kind)
    lines += _compare("column ", before.columns, after.columns, oids)
    lines += _compare("constraint ", before.constraints, after.constraints, oids)
    lines += _compare("index ", before.indexes, after.indexes, oids)
    lines += _compare_values("enum type ", before.enums, after.enums)
    if rows and before.rows and after.rows:
        lines += [f"table {_name(key)}: {before.rows[key]} rows -> {after.rows[key]} rows"
                  for key in sorted(before.rows.keys() & after.rows.keys())
                  if before.rows[key] != after.rows[key]]
    return lines


def _relation_kind(state: RelationState) -> str:
    return state.kind


def _compare(what: str, before: Mapping[Key, object], after: Mapping[Key, object], oids: bool,
             label: object = None) -> list[str]:
    lines = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        noun = what or (f"{label(old or new)} " if callable(label) else "")
        if old is None or new is None:
            lines.append(f"{noun}{_name(key)} {'added' if old is None else 'removed'}"
                         + _shown(new if old is None else old))
        elif old != new:
            lines.append(f"{noun}{_name(key)}: {_changes(old, new)}")
        elif oids and _identity(old) != _identity(new):
            lines.append(f"{noun}{_name(key)} dropped and re-created ({_identity_text(old, new)})")
    return lines


def _compare_values(what: str, before: Mapping[Key, tuple[str, ...]],
                    after: Mapping[Key, tuple[str, ...]]) -> list[str]:
    lines = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old != new:
            lines.append(f"{what}{_name(key)}: {old!r} -> {new!r}")
    return lines


def _changes(old: object, new: object) -> str:
    """``field: old -> new`` for every compared field that differs."""
    parts = []
    for item in fields(old):  # type: ignore[arg-type]
        if not item.compare:
            continue
        a, b = getattr(old, item.name), getattr(new, item.name)
        if a != b:
            parts.append(f"{item.name.replace('_', ' ')} {a!r} -> {b!r}")
    return "; ".join(parts)


def _identity(state: object) -> int | None:
    return getattr(state, "oid", None) if not isinstance(state, ColumnState) else state.position


def _identity_text(old: object, new: object) -> str:
    name = "position" if isinstance(old, ColumnState) else "OID"
    return f"{name} {_identity(old)} -> {_identity(new)}"


def _shown(state: object) -> str:
    definition = getattr(state, "definition", None)
    if definition:
        return f": {definition}"
    if isinstance(state, ColumnState):
        return f": {state.type}{' NOT NULL' if state.not_null else ''}"
    return ""


def _name(key: Key) -> str:
    return ".".join(key)
