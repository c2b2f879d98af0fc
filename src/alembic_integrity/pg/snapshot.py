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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import Connection, text

from . import raw
from .catalog import CONSTRAINT_KINDS, ConstraintState, not_null_sql
from .identifiers import quote

__all__ = [
    "ColumnState",
    "ConstraintState",
    "IndexState",
    "RelationState",
    "SchemaSnapshot",
    "count_rows",
    "differences",
    "take",
    "take_relations",
]

Key = tuple[str, ...]

# verify's DDL log (pg/ddl_log.py) lives in this schema; it is never part of a snapshot.
LOG_SCHEMA = "alembic_integrity_verify"
_USER_SCHEMAS = ("n.nspname NOT LIKE 'pg!_%' ESCAPE '!' AND n.nspname <> 'information_schema' "
                 f"AND n.nspname <> '{LOG_SCHEMA}'")
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
    """Read the snapshot in one transaction (rolled back: reading changes nothing).

    On a connection already inside a transaction, the reads join it.
    """
    if conn.in_transaction():
        return _read(conn, count_rows)
    with conn.begin() as tx:
        snapshot = _read(conn, count_rows)
        tx.rollback()
    return snapshot


def _read(conn: Connection, count_rows: bool) -> SchemaSnapshot:
    return SchemaSnapshot(
        schemas=frozenset(_scalars(conn, f"SELECT n.nspname FROM pg_namespace n "
                                         f"WHERE {_USER_SCHEMAS}")),
        relations=_relations(conn),
        columns=_columns(conn),
        constraints=_constraints(conn),
        indexes=_indexes(conn),
        enums=_enums(conn),
        rows=_row_counts(conn) if count_rows else {},
    )


# Relations whose entries name others: tables with foreign keys to them, sequences they own.
_DEPENDENTS = (
    "SELECT k.conrelid FROM pg_constraint k WHERE k.confrelid = ANY(CAST(:oids AS oid[])) "
    "AND k.conrelid <> 0 UNION SELECT d.objid FROM pg_depend d JOIN pg_class s "
    "ON s.oid = d.objid WHERE d.classid = 'pg_class'::regclass "
    "AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY(CAST(:oids AS oid[])) "
    "AND s.relkind = 'S'")


def take_relations(conn: Connection, oids: list[int], *, whole: SchemaSnapshot | None = None,
                   ) -> tuple[set[int], SchemaSnapshot]:
    """The relations ``oids`` and those naming them, in ONE round trip.

    Returns the OIDs read (``oids`` plus their dependents) and what exists of them
    now. Schemas and enum types are read too unless ``whole`` already holds them
    (they change only through DDL on schemas and types).
    """
    parts = [("r", _RELATIONS_SQL), ("c", _columns_sql(conn)), ("k", _CONSTRAINTS_SQL),
             ("i", _INDEXES_SQL)]
    selects = ["SELECT 'a', json_build_array(wanted.oid) FROM wanted"]
    for tag, (select, rest, column) in parts:
        selects.append(f"SELECT '{tag}', json_build_array({select}) {rest} "
                       f"AND {column} IN (SELECT oid FROM wanted)")
    if whole is None:
        selects.append(f"SELECT 's', json_build_array({_SCHEMAS_SQL[0]}) {_SCHEMAS_SQL[1]}")
        selects.append(f"SELECT 'e', json_build_array({_ENUMS_SQL[0]}) {_ENUMS_SQL[1]}")
    sql = (f"WITH wanted(oid) AS (SELECT unnest(CAST(:oids AS oid[])) UNION {_DEPENDENTS}) "
           + " UNION ALL ".join(f"({q})" for q in selects))
    found: dict[str, list[Sequence[Any]]] = {tag: [] for tag in "arckise"}
    for tag, row in conn.execute(text(sql), {"oids": oids}):
        found[tag].append(row)
    return {int(r[0]) for r in found["a"]}, SchemaSnapshot(
        schemas=whole.schemas if whole is not None else frozenset(r[0] for r in found["s"]),
        relations=dict(_relation_entry(r) for r in found["r"]),
        columns=dict(_column_entry(r) for r in found["c"]),
        constraints=dict(_constraint_entry(r) for r in found["k"]),
        indexes=dict(_index_entry(r) for r in found["i"]),
        enums=whole.enums if whole is not None else dict(_enum_entry(r) for r in found["e"]),
    )


def count_rows(conn: Connection, tables: Iterable[Key]) -> dict[Key, int]:
    """``count(*)`` of each ``(schema, table)``, in one round trip (UNION ALL of counts)."""
    wanted = sorted(set(tables))
    counts: dict[Key, int] = {}
    for start in range(0, len(wanted), 500):  # keep each statement of a readable size
        chunk = wanted[start:start + 500]
        sql = " UNION ALL ".join(
            f"SELECT {i}, count(*) FROM {quote(key[0])}.{quote(key[1])}"
            for i, key in enumerate(chunk))
        for index, count in raw.execute(conn, sql):
            counts[chunk[index]] = int(count)
    return counts


def _scalars(conn: Connection, sql: str) -> list[str]:
    return [row[0] for row in conn.execute(text(sql))]


def _only(column: str, oids: list[int] | None) -> str:
    """The condition restricting a read to some relations (``:oids``), or none."""
    return "" if oids is None else f" AND {column} = ANY(CAST(:oids AS oid[]))"


def _params(oids: list[int] | None) -> dict[str, list[int]]:
    return {} if oids is None else {"oids": oids}


# Each reader: its SELECT list, the rest of its query, and how a row becomes an entry.
_RELATIONS_SQL = ("n.nspname, c.relname, c.relkind, c.oid",
                  "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMAS}", "c.oid")
_COLUMNS_SQL = ("n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                "{not_null}, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, "
                "a.attnum",
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                "WHERE a.attnum > 0 AND NOT a.attisdropped "
                f"AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {_USER_SCHEMAS}", "c.oid")
_CONSTRAINTS_SQL = ("n.nspname, c.relname, k.conname, k.contype, k.convalidated, "
                    "pg_get_constraintdef(k.oid), k.oid",
                    "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
                    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_SCHEMAS}",
                    "c.oid")
_INDEXES_SQL = ("n.nspname, t.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid, i.oid",
                "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_class t ON t.oid = x.indrelid "
                f"JOIN pg_namespace n ON n.oid = t.relnamespace WHERE {_USER_SCHEMAS}", "t.oid")
_ENUMS_SQL = ("n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)",
              "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
              f"JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_USER_SCHEMAS} "
              "GROUP BY n.nspname, t.typname", "")
_SCHEMAS_SQL = ("n.nspname", f"FROM pg_namespace n WHERE {_USER_SCHEMAS}", "")


def _relation_entry(r: Sequence[Any]) -> tuple[Key, RelationState]:
    return (r[0], r[1]), RelationState(_RELKINDS[r[2]], int(r[3]))


def _column_entry(r: Sequence[Any]) -> tuple[Key, ColumnState]:
    return (r[0], r[1], r[2]), ColumnState(r[3], bool(r[4]), r[5], r[6] or "", r[7] or "",
                                           int(r[8]))


def _constraint_entry(r: Sequence[Any]) -> tuple[Key, ConstraintState]:
    return (r[0], r[1], r[2]), ConstraintState(CONSTRAINT_KINDS.get(r[3], str(r[3])), bool(r[4]),
                                               r[5].removesuffix(" NOT VALID"), int(r[6]), r[2])


def _index_entry(r: Sequence[Any]) -> tuple[Key, IndexState]:
    return (r[0], r[1], r[2]), IndexState(r[3], bool(r[4]), int(r[5]))


def _enum_entry(r: Sequence[Any]) -> tuple[Key, tuple[str, ...]]:
    return (r[0], r[1]), tuple(r[2])


def _read_part(conn: Connection, part: tuple[str, str, str],
               oids: list[int] | None) -> list[Sequence[Any]]:
    select, rest, column = part
    where = _only(column, oids) if column else ""
    if "GROUP BY" in rest or not where:
        sql = f"SELECT {select} {rest}"
    else:
        sql = f"SELECT {select} {rest}{where}"
    return list(conn.execute(text(sql), _params(oids if where else None)))


def _relations(conn: Connection, oids: list[int] | None = None) -> dict[Key, RelationState]:
    return dict(_relation_entry(r) for r in _read_part(conn, _RELATIONS_SQL, oids))


def _columns(conn: Connection, oids: list[int] | None = None) -> dict[Key, ColumnState]:
    return dict(_column_entry(r) for r in _read_part(conn, _columns_sql(conn), oids))


def _columns_sql(conn: Connection) -> tuple[str, str, str]:
    """The column read, with NOT NULL meaning "and validated" on this server's major."""
    select, rest, column = _COLUMNS_SQL
    return select.replace("{not_null}", not_null_sql(conn, "a")), rest, column


def _constraints(conn: Connection, oids: list[int] | None = None) -> dict[Key, ConstraintState]:
    return dict(_constraint_entry(r) for r in _read_part(conn, _CONSTRAINTS_SQL, oids))


def _indexes(conn: Connection, oids: list[int] | None = None) -> dict[Key, IndexState]:
    return dict(_index_entry(r) for r in _read_part(conn, _INDEXES_SQL, oids))


def _enums(conn: Connection) -> dict[Key, tuple[str, ...]]:
    return dict(_enum_entry(r) for r in _read_part(conn, _ENUMS_SQL, None))


def _row_counts(conn: Connection) -> dict[Key, int]:
    """Every table's ``count(*)`` through :func:`count_rows`: plain SQL, no XML functions.

    So it works on servers built without libxml (``query_to_xml``/``xpath`` are not
    used), for read-only and non-superuser sessions, and on a hot standby.
    """
    tables = [(r[0], r[1]) for r in conn.execute(text(
        "SELECT n.nspname, c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS}"))]
    return count_rows(conn, tables)


# --------------------------------------------------------------------------- comparing


def differences(before: SchemaSnapshot, after: SchemaSnapshot, *, oids: bool = True,
                rows: bool = True) -> list[str]:
    """One readable line per difference, empty when the snapshots agree.

    ``oids=False`` ignores re-creation (new OIDs, column positions); ``rows=False``
    ignores row counts.
    """
    if before is after:
        return []
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
    if before is after:
        return []
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
