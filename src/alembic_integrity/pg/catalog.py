"""What the database has now, read from ``pg_catalog``: the one place that reads it.

Every read of constraints, columns, keys, foreign keys and referrers lives
here, so a difference between PostgreSQL majors is decided once, from
``server_version_num`` (see :class:`Features`). The one such difference that
matters today: PostgreSQL 18 stores NOT NULL as a constraint (``contype 'n'``)
and sets ``attnotnull`` even while that constraint is ``NOT VALID``, so a
column is NOT NULL *for sure* only when its ``'n'`` constraint is validated.

Tables are resolved by the server (``to_regclass`` over ``format('%I')``), so
mixed-case, reserved and non-``public`` names need no quoting here, and
definitions are read as PostgreSQL normalises them, never as typed.

Reads come in two shapes: one object at a time (operations, drift), and
:func:`table_infos`, which reads every table a set of rules touches in a fixed
number of round trips whatever the number of tables (the audit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from ..errors import CatalogError
from .identifiers import TableName, quote

_REGCLASS = (
    "to_regclass(CASE WHEN CAST(:schema AS text) IS NULL THEN format('%I', CAST(:table AS text)) "
    "ELSE format('%I.%I', CAST(:schema AS text), CAST(:table AS text)) END)"
)

UNDEFINED_COLUMN = "42703"

CONSTRAINT_KINDS = {"c": "CHECK", "f": "FOREIGN KEY", "p": "PRIMARY KEY", "u": "UNIQUE",
                    "x": "EXCLUDE", "t": "TRIGGER", "n": "NOT NULL"}
_CONTYPES = {kind: code for code, kind in CONSTRAINT_KINDS.items()}
_MATCH = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}

FK_NOT_VALID_ON_PARTITIONED = 180000
NATIVE_NOT_NULL_VERSION = 180000
"""PostgreSQL 18: NOT NULL is a ``pg_constraint`` row and can be added ``NOT VALID``."""


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class Features:
    """What this server can do, decided once from ``server_version_num``."""

    version_num: int

    @property
    def major(self) -> int:
        return self.version_num // 10000

    @property
    def fk_not_valid_on_partitioned(self) -> bool:
        """``ADD FOREIGN KEY ... NOT VALID`` on a partitioned table (refused before 18)."""
        return self.version_num >= FK_NOT_VALID_ON_PARTITIONED

    @property
    def native_not_null(self) -> bool:
        """``ADD CONSTRAINT n NOT NULL col NOT VALID`` exists; ``attnotnull`` may be unvalidated."""
        return self.version_num >= NATIVE_NOT_NULL_VERSION


_FEATURES_KEY = "alembic_integrity.features"


def features(conn: Connection) -> Features:
    """The server's :class:`Features`, cached on the DBAPI connection (one query per session)."""
    cached = conn.info.get(_FEATURES_KEY)
    if isinstance(cached, Features):
        return cached
    found = Features(int(conn.execute(text("SELECT current_setting('server_version_num')"))
                         .scalar_one()))
    conn.info[_FEATURES_KEY] = found
    return found


# --------------------------------------------------------------------------- states


@dataclass(frozen=True)
class ForeignKeyState:
    """A foreign key's structure, as the comparisons need it (columns in key order)."""

    columns: tuple[str, ...]
    referent_oid: int
    referent_columns: tuple[str, ...]
    ondelete: str  # confdeltype: a, r, c, n, d
    onupdate: str
    match: str  # confmatchtype: s, f, p
    deferrable: bool = False
    initially_deferred: bool = False
    referent_schema: str = ""
    referent_name: str = ""

    @property
    def match_word(self) -> str:
        return _MATCH.get(self.match, self.match)

    @property
    def initially(self) -> str:
        return "DEFERRED" if self.initially_deferred else "IMMEDIATE"


@dataclass(frozen=True)
class ConstraintState:
    """One constraint as the catalog has it.

    Equality compares what a constraint *is* (kind, validity, definition),
    not which object carries it, so the verify snapshot (which keys these by
    name) compares two reads; ``oid`` tells re-creation apart where it matters.
    """

    kind: str  # "CHECK", "FOREIGN KEY", "UNIQUE", "NOT NULL", ...
    validated: bool
    definition: str  # pg_get_constraintdef, without a trailing " NOT VALID"
    oid: int = field(compare=False)
    name: str = field(default="", compare=False)
    expression: str | None = field(default=None, compare=False)  # a CHECK's predicate
    columns: tuple[str, ...] = field(default=(), compare=False)  # conkey, in key order
    foreign_key: ForeignKeyState | None = field(default=None, compare=False)

    @property
    def contype(self) -> str:
        return _CONTYPES.get(self.kind, self.kind)


@dataclass(frozen=True)
class ColumnInfo:
    """One column's nullability; ``not_null`` only when PostgreSQL guarantees it."""

    name: str
    attnum: int
    not_null: bool  # NOT NULL and validated: no row can hold a NULL
    not_null_constraint: str | None = None  # PostgreSQL 18+: the 'n' constraint's name
    not_null_pending: bool = False  # PostgreSQL 18+: an 'n' constraint that is NOT VALID


@dataclass
class TableInfo:
    """Everything the rules of one table need from the catalog, read in one go."""

    oid: int
    table: TableName
    columns: dict[str, ColumnInfo] = field(default_factory=dict)
    constraints: dict[str, ConstraintState] = field(default_factory=dict)

    @property
    def primary_key(self) -> list[str]:
        for state in self.constraints.values():
            if state.contype == "p":
                return list(state.columns)
        return []


# --------------------------------------------------------------------------- tables


def table_oid(conn: Connection, table: TableName) -> int | None:
    row = conn.execute(
        text(f"SELECT CAST({_REGCLASS} AS oid)"), {"schema": table.schema, "table": table.name}
    ).scalar()
    return int(row) if row else None


def require_table(conn: Connection, table: TableName, doing: str) -> int:
    oid = table_oid(conn, table)
    if oid is None:
        raise CatalogError(f"{doing}: {missing_table(table)}; create it first "
                           f"or pass the right schema=")
    return oid


def missing_table(table: TableName) -> str:
    where = f"schema {table.schema!r}" if table.schema else "the search_path"
    return f"table {table} does not exist in {where}"


@dataclass(frozen=True)
class Relation:
    """A table's real schema and name, its primary key constraint's name, and its kind."""

    schema: str
    name: str
    pk_name: str | None
    partitioned: bool


def relation(conn: Connection, oid: int) -> Relation:
    row = conn.execute(text(
        "SELECT n.nspname, c.relname, (SELECT k.conname FROM pg_constraint k "
        "  WHERE k.conrelid = c.oid AND k.contype = 'p'), c.relkind = 'p' "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = :oid"
    ), {"oid": oid}).one()
    return Relation(row[0], row[1], row[2], bool(row[3]))


def table_oids(conn: Connection, tables: Sequence[TableName]) -> dict[TableName, int | None]:
    """Resolve many tables in ONE round trip."""
    if not tables:
        return {}
    rows = conn.execute(text(
        "SELECT x.i, CAST(to_regclass(CASE WHEN x.s IS NULL THEN format('%I', x.n) "
        "ELSE format('%I.%I', x.s, x.n) END) AS oid) "
        "FROM unnest(CAST(:schemas AS text[]), CAST(:names AS text[])) "
        "WITH ORDINALITY AS x(s, n, i)"),
        {"schemas": [t.schema for t in tables], "names": [t.name for t in tables]}).all()
    found = {int(i): (int(oid) if oid else None) for i, oid in rows}
    return {t: found.get(i + 1) for i, t in enumerate(tables)}


def user_relations(conn: Connection, limit: int) -> list[str]:
    """``schema.name`` of up to ``limit`` tables, views or foreign tables outside pg_*."""
    return list(conn.execute(text(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT LIKE 'pg!_%' "
        "ESCAPE '!' AND n.nspname <> 'information_schema' ORDER BY 1 LIMIT :n"),
        {"n": limit}).scalars())


# --------------------------------------------------------------------------- columns


def _columns_sql(feats: Features) -> str:
    """Columns of ``:oids``; on 18+ with the 'n' constraint that carries their NOT NULL."""
    if feats.native_not_null:
        return (
            "SELECT a.attrelid, a.attname, a.attnum, a.attnotnull, k.conname, k.convalidated "
            "FROM pg_attribute a LEFT JOIN pg_constraint k ON k.conrelid = a.attrelid "
            "AND k.contype = 'n' AND k.conkey[1] = a.attnum "
            "WHERE a.attrelid = ANY(CAST(:oids AS oid[])) AND a.attnum > 0 "
            "AND NOT a.attisdropped"
        )
    return (
        "SELECT a.attrelid, a.attname, a.attnum, a.attnotnull, NULL, NULL FROM pg_attribute a "
        "WHERE a.attrelid = ANY(CAST(:oids AS oid[])) AND a.attnum > 0 AND NOT a.attisdropped"
    )


def _column(row: Any) -> ColumnInfo:
    _, name, attnum, attnotnull, conname, validated = row
    if conname is None:  # before 18 (or no NOT NULL): attnotnull is the truth
        return ColumnInfo(name, int(attnum), bool(attnotnull))
    return ColumnInfo(name, int(attnum), bool(attnotnull) and bool(validated), conname,
                      not bool(validated))


def _read_columns(conn: Connection, oids: list[int]) -> dict[int, dict[str, ColumnInfo]]:
    found: dict[int, dict[str, ColumnInfo]] = {oid: {} for oid in oids}
    for row in conn.execute(text(_columns_sql(features(conn))), {"oids": oids}):
        found[int(row[0])][row[1]] = _column(row)
    return found


def columns(conn: Connection, oid: int) -> dict[str, ColumnInfo]:
    """Every column's nullability, by name."""
    return _read_columns(conn, [oid])[oid]


def column(conn: Connection, oid: int, name: str) -> ColumnInfo | None:
    """One column's nullability, None when the table has no such column."""
    return _read_columns(conn, [oid])[oid].get(name)


def column_not_null(conn: Connection, oid: int, name: str) -> bool | None:
    """True when the column is NOT NULL and validated, None when there is no such column."""
    info = column(conn, oid, name)
    return None if info is None else info.not_null


def not_null_sql(conn: Connection, attribute: str = "a") -> str:
    """A SQL expression over a ``pg_attribute`` alias: NOT NULL and validated, on this major."""
    if not features(conn).native_not_null:
        return f"{attribute}.attnotnull"
    return (f"({attribute}.attnotnull AND NOT EXISTS (SELECT 1 FROM pg_constraint nn "
            f"WHERE nn.conrelid = {attribute}.attrelid AND nn.contype = 'n' "
            f"AND nn.conkey[1] = {attribute}.attnum AND NOT nn.convalidated))")


# --------------------------------------------------------------------------- constraints

_CONSTRAINTS_SQL = (
    "SELECT c.conrelid, c.oid, c.conname, c.contype, c.convalidated, pg_get_constraintdef(c.oid), "
    "CASE WHEN c.contype = 'c' THEN pg_get_expr(c.conbin, c.conrelid) END, "
    "ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
    "  JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
    "c.confrelid, "
    "ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i) "
    "  JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), "
    "c.confdeltype, c.confupdtype, c.confmatchtype, c.condeferrable, c.condeferred, "
    "rn.nspname, r.relname "
    "FROM pg_constraint c LEFT JOIN pg_class r ON r.oid = c.confrelid "
    "LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace "
)


def _constraint(row: Any) -> ConstraintState:
    (_, oid, name, contype, validated, definition, expression, columns, confrelid, fcolumns,
     deltype, updtype, matchtype, deferrable, deferred, rschema, rname) = row
    fk = None
    if contype == "f":
        fk = ForeignKeyState(tuple(columns), int(confrelid), tuple(fcolumns), deltype, updtype,
                             matchtype, bool(deferrable), bool(deferred), rschema or "",
                             rname or "")
    return ConstraintState(CONSTRAINT_KINDS.get(contype, contype), bool(validated),
                           definition.removesuffix(" NOT VALID"), int(oid), name, expression,
                           tuple(columns or ()), fk)


def constraint(conn: Connection, oid: int, name: str) -> ConstraintState | None:
    row = conn.execute(text(_CONSTRAINTS_SQL + "WHERE c.conrelid = :rel AND c.conname = :name"),
                       {"rel": oid, "name": name}).one_or_none()
    return None if row is None else _constraint(row)


def constraints(conn: Connection, oid: int, kinds: Iterable[str] = ()) -> list[ConstraintState]:
    """The table's constraints, by name; only ``kinds`` (e.g. ``"CHECK"``) when given."""
    codes = [_CONTYPES[k] for k in kinds]
    rows = conn.execute(text(
        _CONSTRAINTS_SQL + "WHERE c.conrelid = :rel AND (cardinality(CAST(:codes AS text[])) = 0 "
        "OR c.contype::text = ANY(CAST(:codes AS text[]))) ORDER BY c.conname"),
        {"rel": oid, "codes": codes})
    return [_constraint(r) for r in rows]


def foreign_key_state(conn: Connection, constraint_oid: int) -> ForeignKeyState:
    """The structure of one foreign key (columns, referent, actions, deferrability, match)."""
    row = conn.execute(text(_CONSTRAINTS_SQL + "WHERE c.oid = :oid AND c.contype = 'f'"),
                       {"oid": constraint_oid}).one()
    state = _constraint(row)
    assert state.foreign_key is not None
    return state.foreign_key


@dataclass(frozen=True)
class Referrer:
    """A foreign key pointing at a table: its name, child table and structure."""

    name: str
    child_oid: int
    foreign_key: ForeignKeyState


def referrers(conn: Connection, oid: int) -> list[Referrer]:
    """Every top-level foreign key onto ``oid`` (NOT VALID and self-references included)."""
    rows = conn.execute(text(_CONSTRAINTS_SQL + "WHERE c.contype = 'f' AND c.confrelid = :oid "
                             "AND c.conparentid = 0 ORDER BY c.conname"), {"oid": oid})
    found = []
    for row in rows:
        state = _constraint(row)
        assert state.foreign_key is not None
        found.append(Referrer(state.name, int(row[0]), state.foreign_key))
    return found


def primary_key(conn: Connection, oid: int) -> list[str]:
    """Primary key columns in key order; empty when the table has none."""
    state = next((s for s in constraints(conn, oid, ["PRIMARY KEY"])), None)
    return list(state.columns) if state is not None else []


# --------------------------------------------------------------------------- in bulk


def table_infos(conn: Connection, tables: Sequence[TableName]) -> dict[TableName, TableInfo | None]:
    """Columns and constraints of every table in ``tables``, in three round trips in all.

    None for a table that does not exist. What the audit decides from this is
    decided in memory, so its catalog cost does not grow with the rule count.
    """
    oids = table_oids(conn, list(dict.fromkeys(tables)))
    infos: dict[int, TableInfo] = {oid: TableInfo(oid, t) for t, oid in oids.items()
                                   if oid is not None}
    if infos:
        for oid, columns in _read_columns(conn, list(infos)).items():
            infos[oid].columns = columns
        for row in conn.execute(text(_CONSTRAINTS_SQL + "WHERE c.conrelid = ANY("
                                     "CAST(:oids AS oid[])) ORDER BY c.conname"),
                                {"oids": list(infos)}):
            state = _constraint(row)
            infos[int(row[0])].constraints[state.name] = state
    return {t: (infos[oid] if oid is not None else None) for t, oid in oids.items()}


def foreign_key_timing(conn: Connection, constraint_oid: int) -> tuple[bool, bool]:
    """(DEFERRABLE, INITIALLY DEFERRED) of a foreign key."""
    state = foreign_key_state(conn, constraint_oid)
    return state.deferrable, state.initially_deferred


def constraints_of(conn: Connection, rel_oid: int, contype: str) -> list[ConstraintState]:
    """Every constraint of one type (``c``, ``f``...) on a table, by name."""
    return constraints(conn, rel_oid, [CONSTRAINT_KINDS[contype]])


def quoted_columns(columns: list[str] | tuple[str, ...]) -> str:
    return ", ".join(quote(c) for c in columns)


# --- partitioned tables ------------------------------------------------------------------
# Reads for operations/partitions.py. What differs by version is decided here.

@dataclass(frozen=True)
class LeafConstraint:
    """One leaf partition of a partitioned table, and its copy of a constraint (if any)."""

    table: TableName  # always schema-qualified: partitions may live in other schemas
    relid: int
    constraint: ConstraintState | None
    inherited: bool  # attached to a parent's constraint (conparentid / coninhcount)


def server_version_num(conn: Connection) -> int:
    return features(conn).version_num


def is_partitioned(conn: Connection, oid: int) -> bool:
    return bool(conn.execute(
        text("SELECT relkind = 'p' FROM pg_class WHERE oid = :rel"), {"rel": oid}
    ).scalar())


def fk_not_valid_on_partitioned(conn: Connection) -> bool:
    """PostgreSQL 18 accepts ``ADD FOREIGN KEY ... NOT VALID`` on a partitioned table."""
    return features(conn).fk_not_valid_on_partitioned


# Every leaf under :root (any depth, any schema), in a stable order (path of names), and on
# each the constraint matching :name on the root: for a foreign key the clone that points to
# the root's (conparentid chain, whatever its name), for CHECK the one of the same name (the
# only way CHECKs are inherited), for NOT NULL (contype 'n', 18+) the one on the same column.
# When the root has no such constraint, the leaf's own constraint of that name.
_LEAVES = """
WITH RECURSIVE tree(relid, path) AS (
    SELECT CAST(:root AS oid), CAST(ARRAY[] AS text[]) COLLATE "C"
  UNION ALL
    SELECT i.inhrelid, t.path || CAST(n.nspname || '.' || c.relname AS text) COLLATE "C"
    FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid
    JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
),
root AS (
    SELECT c.oid, c.contype, c.confrelid,
           (SELECT a.attname FROM pg_attribute a
            WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]) AS column1
    FROM pg_constraint c WHERE c.conrelid = CAST(:root AS oid) AND c.conname = :name
),
clones(oid) AS (
    SELECT oid FROM root WHERE contype = 'f'
  UNION ALL
    SELECT c.oid FROM pg_constraint c JOIN clones ON c.conparentid = clones.oid
)
SELECT n.nspname, k.relname, k.oid, con.oid, con.conname, con.contype, con.convalidated,
       pg_get_constraintdef(con.oid), con.conparentid <> 0 OR con.coninhcount > 0
FROM tree t
JOIN pg_class k ON k.oid = t.relid AND k.relkind = 'r'
JOIN pg_namespace n ON n.oid = k.relnamespace
LEFT JOIN LATERAL (
    SELECT c.* FROM pg_constraint c LEFT JOIN root ON true
    WHERE c.conrelid = k.oid AND CASE
        WHEN root.oid IS NULL THEN c.conname = :name
        WHEN root.contype = 'f' THEN c.oid IN (SELECT oid FROM clones)
                                     AND c.confrelid = root.confrelid
        WHEN root.contype = 'n' THEN c.contype = 'n' AND (
            SELECT a.attname FROM pg_attribute a
            WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]) = root.column1
        ELSE c.contype = root.contype AND c.conname = :name END
    LIMIT 1
) con ON true
WHERE t.relid <> CAST(:root AS oid)
ORDER BY t.path
"""


def leaf_constraints(conn: Connection, root: int, name: str) -> list[LeafConstraint]:
    """The leaf partitions of ``root`` with their copy of constraint ``name`` (see _LEAVES)."""
    rows = conn.execute(text(_LEAVES), {"root": root, "name": name}).all()
    oids = [int(row[3]) for row in rows if row[3] is not None]
    states = {}
    if oids:  # the whole state (a foreign key's structure too), as every other read gives it
        states = {s.oid: s for s in map(_constraint, conn.execute(text(
            _CONSTRAINTS_SQL + "WHERE c.oid = ANY(CAST(:oids AS oid[]))"), {"oids": oids}))}
    return [LeafConstraint(TableName(row[1], row[0]), int(row[2]),
                           states.get(int(row[3])) if row[3] is not None else None,
                           bool(row[8])) for row in rows]


@dataclass(frozen=True)
class RelationLock:
    """One row of ``pg_locks`` on a relation we are about to lock, with its session.

    ``root`` is the index of the requested relation the lock is on (directly or
    on one of its partitions / inheritance children). The ages are seconds;
    ``xact_age`` and ``query`` are None when the session's details are hidden
    from this role (``pg_stat_activity`` shows other roles' sessions only to
    members of ``pg_read_all_stats``), and for prepared transactions (no pid).
    ``blocker_age`` (waiters only): the oldest transaction among the sessions
    that block this waiter (``pg_blocking_pids``), where visible.
    """

    root: int
    relation: str
    pid: int | None
    vxid: str
    mode: str
    granted: bool
    xact_age: float | None
    wait_age: float | None
    state: str | None
    query: str | None
    backend_type: str | None
    blocker_age: float | None


# The leading comment names the look in pg_stat_activity (whose text is cut at 1 kB).
# pg_stat_get_activity(pid) reads one backend's entry, only for the locks that matter.
_RELATION_LOCKS = """/* alembic_integrity: looking at pg_locks before locking */
WITH RECURSIVE roots AS (
  SELECT r.ord::int - 1 AS root,
         coalesce(r.rel, to_regclass(CASE WHEN r.sch IS NULL THEN format('%I', r.tab)
                                          ELSE format('%I.%I', r.sch, r.tab) END)::oid) AS relid
  FROM unnest(CAST(:schemas AS text[]), CAST(:tables AS text[]), CAST(:oids AS oid[]))
       WITH ORDINALITY AS r(sch, tab, rel, ord)
), tree AS (
  SELECT root, relid FROM roots WHERE relid IS NOT NULL
  UNION
  SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid
), wanted AS (
  SELECT w.root, w.mode
  FROM unnest(CAST(:mode_roots AS int[]), CAST(:modes AS text[])) AS w(root, mode)
), found AS (
  SELECT t.root, l.relation, l.pid, l.virtualtransaction, l.mode, l.granted
  FROM tree t
  JOIN pg_locks l ON l.locktype = 'relation' AND l.relation = t.relid
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  WHERE l.pid IS DISTINCT FROM pg_backend_pid()
    AND EXISTS (SELECT 1 FROM wanted w WHERE w.root = t.root AND w.mode = l.mode)
)
SELECT f.root, f.relation::regclass::text, f.pid, f.virtualtransaction, f.mode, f.granted,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8,
       CASE WHEN NOT f.granted
            THEN extract(epoch FROM clock_timestamp() - a.query_start)::float8 END,
       CASE WHEN a.xact_start IS NOT NULL THEN a.state END,
       CASE WHEN a.xact_start IS NOT NULL THEN a.query END,
       a.backend_type,
       CASE WHEN NOT f.granted THEN (
         SELECT max(extract(epoch FROM clock_timestamp() - b.xact_start))::float8
         FROM unnest(pg_blocking_pids(f.pid)) AS bp(pid)
         CROSS JOIN LATERAL pg_stat_get_activity(bp.pid) AS b) END
FROM found f
LEFT JOIN LATERAL pg_stat_get_activity(f.pid) AS a ON true
"""


def relation_locks(conn: Connection, relations: list[TableName | int],
                   modes: list[set[str]]) -> list[RelationLock]:
    """The locks other sessions hold or wait for on ``relations`` and their partitions,
    in one of the ``modes`` given for that relation (same index).

    One round trip; ``pg_locks`` is readable by every role. Relations that do
    not exist (yet) are skipped.
    """
    schemas = [r.schema if isinstance(r, TableName) else None for r in relations]
    tables = [r.name if isinstance(r, TableName) else None for r in relations]
    oids = [r if isinstance(r, int) else None for r in relations]
    pairs = [(i, mode) for i, wanted in enumerate(modes) for mode in sorted(wanted)]
    rows = conn.execute(text(_RELATION_LOCKS), {
        "schemas": schemas, "tables": tables, "oids": oids,
        "mode_roots": [i for i, _ in pairs], "modes": [m for _, m in pairs]}).all()
    return [RelationLock(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8],
                         r[9], r[10], r[11]) for r in rows]


# --- repair: columns and inheritance ----------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """A column as repair and restore need it: its name and its exact type as SQL."""

    name: str
    type_sql: str
    """``format_type`` of the column, or of its domain's base type (a copy of a value
    needs no domain check: the value passed it, or was let in NOT VALID)."""
    generated: bool
    identity_always: bool


def table_columns(conn: Connection, oid: int) -> list[ColumnType]:
    """The live columns of a table in attribute order, with their types."""
    rows = conn.execute(
        text(
            "SELECT a.attname, CASE WHEN ty.typtype = 'd' "
            "THEN format_type(ty.typbasetype, ty.typtypmod) "
            "ELSE format_type(a.atttypid, a.atttypmod) END, "
            "a.attgenerated <> '', a.attidentity = 'a' "
            "FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid "
            "WHERE a.attrelid = :rel AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        ),
        {"rel": oid},
    ).all()
    return [ColumnType(r[0], r[1], bool(r[2]), bool(r[3])) for r in rows]


def inheritance_children(conn: Connection, oid: int) -> list[int]:
    """Tables inheriting from ``oid`` (at any depth, by OID), for a table that is not
    partitioned: each has its own columns and key, so repair treats each apart."""
    rows = conn.execute(
        text(
            "WITH RECURSIVE kids(oid) AS ("
            "  SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = :rel "
            "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN kids k ON i.inhparent = k.oid) "
            "SELECT k.oid FROM kids k JOIN pg_class c ON c.oid = k.oid "
            "WHERE NOT c.relispartition ORDER BY k.oid"
        ),
        {"rel": oid},
    ).scalars()
    return [int(r) for r in rows]
