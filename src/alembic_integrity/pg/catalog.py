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


def foreign_key_timing(conn: Connection, constraint_oid: int) -> tuple[bool, bool]:
    """(DEFERRABLE, INITIALLY DEFERRED) of a constraint."""
    row = conn.execute(
        text("SELECT condeferrable, condeferred FROM pg_constraint WHERE oid = :oid"),
        {"oid": constraint_oid},
    ).one()
    return bool(row[0]), bool(row[1])


def constraints_of(conn: Connection, rel_oid: int, contype: str) -> list[ConstraintState]:
    """Every constraint of one type (``c``, ``f``...) on a table, by name."""
    rows = conn.execute(
        text(
            "SELECT c.oid, c.conname, c.contype, c.convalidated, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.conrelid = :rel AND c.contype = :type "
            "ORDER BY c.conname"
        ),
        {"rel": rel_oid, "type": contype},
    )
    return [ConstraintState(int(r[0]), r[1], r[2], bool(r[3]), r[4].removesuffix(" NOT VALID"))
            for r in rows]


def quoted_columns(columns: list[str] | tuple[str, ...]) -> str:
    return ", ".join(quote(c) for c in columns)


# --- partitioned tables ------------------------------------------------------------------
# Reads for operations/partitions.py. What differs by version is decided here.

FK_NOT_VALID_ON_PARTITIONED = 180000  # before 18: "cannot add NOT VALID foreign key on ..."


@dataclass(frozen=True)
class LeafConstraint:
    """One leaf partition of a partitioned table, and its copy of a constraint (if any)."""

    table: TableName  # always schema-qualified: partitions may live in other schemas
    relid: int
    constraint: ConstraintState | None
    inherited: bool  # attached to a parent's constraint (conparentid / coninhcount)


def server_version_num(conn: Connection) -> int:
    return int(conn.execute(text("SELECT current_setting('server_version_num')")).scalar_one())


def is_partitioned(conn: Connection, oid: int) -> bool:
    return bool(conn.execute(
        text("SELECT relkind = 'p' FROM pg_class WHERE oid = :rel"), {"rel": oid}
    ).scalar())


def fk_not_valid_on_partitioned(conn: Connection) -> bool:
    """PostgreSQL 18 accepts ``ADD FOREIGN KEY ... NOT VALID`` on a partitioned table."""
    return server_version_num(conn) >= FK_NOT_VALID_ON_PARTITIONED


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
    leaves = []
    for row in conn.execute(text(_LEAVES), {"root": root, "name": name}):
        state = None
        if row[3] is not None:
            state = ConstraintState(int(row[3]), row[4], row[5], bool(row[6]),
                                    row[7].removesuffix(" NOT VALID"))
        leaves.append(LeafConstraint(TableName(row[1], row[0]), int(row[2]), state,
                                     bool(row[8])))
    return leaves


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
class ColumnInfo:
    """A column as repair and restore need it: its name and its exact type as SQL."""

    name: str
    type_sql: str
    """``format_type`` of the column, or of its domain's base type (a copy of a value
    needs no domain check: the value passed it, or was let in NOT VALID)."""
    generated: bool
    identity_always: bool


def table_columns(conn: Connection, oid: int) -> list[ColumnInfo]:
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
    return [ColumnInfo(r[0], r[1], bool(r[2]), bool(r[3])) for r in rows]


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
