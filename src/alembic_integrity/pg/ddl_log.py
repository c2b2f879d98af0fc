"""A schema snapshot kept current by reading only what DDL touched, and the touched tables' rows.

``verify`` compares the schema before and after every revision's re-run. Reading
the whole catalog (and counting every table) each time makes it cost in
proportion to revisions x schema size. On a database where we may create event
triggers (superuser: the throwaway server), two event triggers record every DDL
command (``pg_event_trigger_ddl_commands()``) and every dropped object
(``pg_event_trigger_dropped_objects()``) into a table of the schema
``alembic_integrity_verify``; :meth:`SnapshotTracker.sync` consumes that log and
re-reads only the relations it names (and those whose definitions name them:
foreign keys pointing at them, their sequences). Log rows are written in the DDL's
own transaction, so DDL that was rolled back leaves none.

Row counts follow the same idea: ``pg_stat_user_tables`` says which tables had
rows inserted, updated or deleted (PostgreSQL 15+, whose
``pg_stat_force_next_flush()`` makes the migration's own counters visible at
once), and only those (plus tables new since the last sync) are counted again: DDL
alone changes no row count.

Where that is not possible (no superuser, PostgreSQL < 15 for the rows,
``track_counts`` off, a log entry of a kind not mapped here such as ``CREATE
EXTENSION``), ``sync`` reads everything, as a full snapshot does: slower, never
less exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TypeVar

from sqlalchemy import Connection, text

from . import raw
from .snapshot import LOG_SCHEMA, Key, SchemaSnapshot, count_rows, take, take_relations

__all__ = ["SnapshotTracker"]

T = TypeVar("T")

_LOG = f"{LOG_SCHEMA}.ddl_log"
_STATS = f"{LOG_SCHEMA}.row_stats"  # each table's row counters at the last sync

# How a logged object maps to the relation whose snapshot entries it changes.
_RELATION_OF = """
    CASE d.classid
      WHEN 'pg_class'::regclass THEN coalesce(
          (SELECT i.indrelid FROM pg_index i WHERE i.indexrelid = d.objid), d.objid)
      WHEN 'pg_constraint'::regclass THEN
          (SELECT nullif(k.conrelid, 0) FROM pg_constraint k WHERE k.oid = d.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = d.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = d.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid)
    END"""

_INSTALL = f"""
CREATE SCHEMA {LOG_SCHEMA};
CREATE TABLE {_LOG} (catalog text NOT NULL, objid oid NOT NULL, relid oid,
                     dropped boolean NOT NULL);
CREATE TABLE {_STATS} (relid oid PRIMARY KEY, counters bigint[] NOT NULL);
CREATE FUNCTION {LOG_SCHEMA}.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO {_LOG}
  SELECT d.classid::regclass::text, d.objid, {_RELATION_OF}, false
  FROM pg_event_trigger_ddl_commands() d WHERE d.schema_name IS DISTINCT FROM '{LOG_SCHEMA}';
END $fn$;
CREATE FUNCTION {LOG_SCHEMA}.log_drop() RETURNS event_trigger LANGUAGE plpgsql AS $fn$
BEGIN
  INSERT INTO {_LOG}
  SELECT d.classid::regclass::text, d.objid, NULL, true
  FROM pg_event_trigger_dropped_objects() d WHERE d.schema_name IS DISTINCT FROM '{LOG_SCHEMA}';
END $fn$;
CREATE EVENT TRIGGER alembic_integrity_verify_ddl ON ddl_command_end
  EXECUTE FUNCTION {LOG_SCHEMA}.log_ddl();
CREATE EVENT TRIGGER alembic_integrity_verify_drop ON sql_drop
  EXECUTE FUNCTION {LOG_SCHEMA}.log_drop();
ALTER EVENT TRIGGER alembic_integrity_verify_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER alembic_integrity_verify_drop ENABLE ALWAYS;
"""

_UNINSTALL = f"""
DROP EVENT TRIGGER IF EXISTS alembic_integrity_verify_ddl;
DROP EVENT TRIGGER IF EXISTS alembic_integrity_verify_drop;
DROP SCHEMA IF EXISTS {LOG_SCHEMA} CASCADE;
"""

# Catalogs whose objects a snapshot holds through their relation.
_MAPPED = frozenset({"pg_class", "pg_constraint", "pg_attrdef", "pg_trigger", "pg_rewrite"})
# Schemas and types: re-read whole (a handful of rows).
_WHOLE = frozenset({"pg_namespace", "pg_type", "pg_enum"})
# Objects no snapshot holds: functions, policies, comments, grants, operators ...
_IGNORED = frozenset({
    "pg_proc", "pg_policy", "pg_statistic_ext", "pg_description", "pg_operator", "pg_opclass",
    "pg_opfamily", "pg_amop", "pg_amproc", "pg_cast", "pg_collation", "pg_conversion",
    "pg_ts_config", "pg_ts_dict", "pg_ts_parser", "pg_ts_template", "pg_language",
    "pg_foreign_data_wrapper", "pg_foreign_server", "pg_user_mapping", "pg_publication",
    "pg_publication_rel", "pg_publication_namespace", "pg_subscription", "pg_default_acl",
    "pg_transform", "pg_aggregate", "pg_event_trigger", "pg_init_privs",
})

# One round trip: consume the log, and note which tables' row counters moved since the
# last sync (kept server-side, so only the moved ones travel).
_CONSUME = f"""
WITH logged AS (DELETE FROM {_LOG} RETURNING catalog, objid, relid, dropped)
SELECT catalog, objid, relid, dropped FROM logged"""
_CONSUME_WITH_STATS = f"""
WITH logged AS (DELETE FROM {_LOG} RETURNING catalog, objid, relid, dropped),
moved AS (
  INSERT INTO {_STATS} SELECT s.relid, ARRAY[s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_live_tup]
  FROM pg_stat_user_tables s WHERE s.schemaname <> '{LOG_SCHEMA}'
  ON CONFLICT (relid) DO UPDATE SET counters = EXCLUDED.counters
  WHERE {_STATS}.counters IS DISTINCT FROM EXCLUDED.counters RETURNING relid)
SELECT catalog, objid, relid, dropped FROM logged
UNION ALL SELECT 'moved', 0, relid, false FROM moved"""


class NeedsFullRead(Exception):
    """The log holds something this module cannot map to relations."""


class SnapshotTracker:
    """The current :class:`SchemaSnapshot` (rows counted), refreshed from a DDL log.

    :meth:`install` once (on a connection of a superuser; otherwise every sync
    reads everything), :meth:`sync` after anything that may have changed the
    database (on any connection that sees the changes), :meth:`uninstall` at the end.
    """

    def __init__(self) -> None:
        self.logging = False  # DDL is logged: sync reads what it names
        self.row_stats = False  # pg_stat counters can be flushed and trusted
        self.state: SchemaSnapshot | None = None
        self.full_reads = 0  # how often sync had to read everything (for tests and bench)
        # (schema or None for any, table): counted once, not again when their counters move
        # (Alembic's version table, updated by every step).
        self.uncounted: set[tuple[str | None, str]] = set()

    # -- setup -----------------------------------------------------------------------

    def install(self, conn: Connection) -> None:
        """Create the log and its event triggers if allowed; then read everything once."""
        with conn.begin():
            can, self.row_stats = conn.execute(text(
                "SELECT rolsuper, current_setting('track_counts')::boolean AND "
                "to_regprocedure('pg_stat_force_next_flush()') IS NOT NULL "
                "FROM pg_roles WHERE rolname = current_user")).one()
            if can:
                raw.execute(conn, _UNINSTALL)
                raw.execute(conn, _INSTALL)
                self.logging = True
        self.resync(conn)

    def uninstall(self, conn: Connection) -> None:
        if self.logging:
            with conn.begin():
                raw.execute(conn, _UNINSTALL)
            self.logging = False

    # -- reading -----------------------------------------------------------------------

    def resync(self, conn: Connection) -> SchemaSnapshot:
        """Read everything (and empty the log): the state after something unmapped."""
        self.full_reads += 1
        with _reading(conn):
            if self.logging:
                self._consume(conn)  # the counters now are the base of the next sync
            snapshot = take(conn)
            tables = [k for k, r in snapshot.relations.items()
                      if r.kind in ("table", "partitioned table")]
            rows = count_rows(conn, tables)
        self.state = dataclasses.replace(snapshot, rows=rows)
        return self.state

    def flush_stats(self, conn: Connection) -> None:
        """Make ``conn``'s backend publish its row counters now (PostgreSQL 15+).

        Call it on the connection that ran the changes, in autocommit (the backend
        publishes when it goes idle outside a transaction); without it a backend
        keeps its counters up to a second, and :meth:`sync` must count every table.
        """
        if self.row_stats:
            raw.execute(conn, "SELECT pg_stat_force_next_flush()")

    def sync(self, conn: Connection, *, flushed: bool) -> SchemaSnapshot:
        """The state now: what the log names re-read, tables with new row activity recounted.

        ``flushed``: :meth:`flush_stats` ran on every connection that changed rows
        since the last sync; otherwise every table is counted.
        """
        if self.state is None or not self.logging:
            return self.resync(conn)
        flushed = flushed and self.row_stats  # before 15 nothing was flushed: count all
        try:
            with _reading(conn):
                self._refresh(conn, flushed)
        except NeedsFullRead:
            return self.resync(conn)
        return self.state

    def _consume(self, conn: Connection) -> tuple[list[tuple[str, int, int | None, bool]],
                                                   set[int]]:
        """The log's rows (now deleted) and the tables whose row counters moved."""
        sql = _CONSUME_WITH_STATS if self.row_stats else _CONSUME
        logged, moved = [], set()
        for catalog, objid, relid, dropped in raw.execute(conn, sql):
            if catalog == "moved":
                moved.add(int(relid))
            else:
                logged.append((str(catalog), int(objid), relid, bool(dropped)))
        return logged, moved

    def _refresh(self, conn: Connection, flushed: bool) -> None:
        assert self.state is not None
        logged, moved = self._consume(conn)
        touched: set[int] = set()
        if logged:
            touched, whole = self._relations_of(logged)
            read, fresh = take_relations(conn, sorted(touched),
                                         whole=None if whole else self.state)
            touched |= read
            self.state = _replace_relations(self.state, touched, fresh)
        self._recount(conn, moved if flushed else None)

    def _uncounted(self, key: Key) -> bool:
        return any(key[1] == table and schema in (None, key[0]) for schema, table in self.uncounted)

    def _relations_of(self, logged: Iterable[tuple[str, int, int | None, bool]],
                      ) -> tuple[set[int], bool]:
        """Relation OIDs whose snapshot entries the logged objects belong to, and whether
        schemas or types changed (then those are read whole)."""
        assert self.state is not None
        state = self.state
        by_constraint = {c.oid: key[:2] for key, c in state.constraints.items()}
        by_index = {i.oid: key[:2] for key, i in state.indexes.items()}
        relation_oid = {key: r.oid for key, r in state.relations.items()}
        touched: set[int] = set()
        whole = False
        for catalog, objid, relid, dropped in logged:
            if catalog in _WHOLE:
                whole = True
                continue
            if catalog in _IGNORED:
                continue
            if catalog not in _MAPPED:
                raise NeedsFullRead(catalog)
            if relid is not None:
                touched.add(int(relid))
            elif dropped and catalog == "pg_constraint" and objid in by_constraint:
                touched.add(relation_oid[by_constraint[objid]])
            elif dropped and catalog == "pg_class" and objid in by_index:
                touched.add(relation_oid[by_index[objid]])
            elif dropped and catalog == "pg_class":
                touched.add(int(objid))  # a relation (or something no snapshot holds)
        return touched, whole

    def _recount(self, conn: Connection, wanted: set[int] | None) -> None:
        """Count again the tables in ``wanted`` and new ones; every table for ``None``."""
        assert self.state is not None
        tables = {r.oid: key for key, r in self.state.relations.items()
                  if r.kind in ("table", "partitioned table")}
        names = set(tables.values())
        if wanted is None:
            chosen = set(tables)
        else:  # DDL alone changes no row count: rows come and go through counted DML
            chosen = {oid for oid in wanted if oid in tables and not self._uncounted(tables[oid])}
            chosen |= {oid for oid, key in tables.items() if key not in self.state.rows}
            if chosen and any(r.kind == "partitioned table"
                              for r in self.state.relations.values()):
                chosen = _with_ancestors(conn, chosen) & tables.keys()
        if not chosen and names == self.state.rows.keys():
            return
        rows = {k: v for k, v in self.state.rows.items() if k in names}
        rows.update(count_rows(conn, [tables[oid] for oid in chosen]))
        self.state = dataclasses.replace(self.state, rows=rows)


class _reading:
    """Run reads in a transaction of their own, or inside the caller's if one is open.

    Inside the caller's transaction (a migration's, on its connection) nothing is
    committed here: the log rows consumed go with the caller's commit or rollback.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.own = not conn.in_transaction()

    def __enter__(self) -> None:
        if self.own:
            self.conn.begin()

    def __exit__(self, kind: object, *rest: object) -> None:
        if not self.own:
            return
        if kind is None:
            self.conn.commit()
        else:
            self.conn.rollback()


def _with_ancestors(conn: Connection, oids: set[int]) -> set[int]:
    """The tables and the partitioned tables above them (whose counts include theirs)."""
    if not oids:
        return set()
    rows = conn.execute(text(
        "SELECT DISTINCT a.relid FROM unnest(CAST(:oids AS oid[])) AS o(oid), "
        "pg_partition_ancestors(o.oid) AS a(relid)"), {"oids": sorted(oids)})
    return {int(r[0]) for r in rows} | oids


def _replace_relations(state: SchemaSnapshot, oids: set[int],
                       fresh: SchemaSnapshot) -> SchemaSnapshot:
    """``state`` with every entry of the relations ``oids`` replaced by ``fresh``'s."""
    gone = {key for key, r in state.relations.items() if r.oid in oids} | set(fresh.relations)
    return SchemaSnapshot(
        schemas=fresh.schemas,
        relations=_merged(state.relations, fresh.relations, gone),
        columns=_merged(state.columns, fresh.columns, gone),
        constraints=_merged(state.constraints, fresh.constraints, gone),
        indexes=_merged(state.indexes, fresh.indexes, gone),
        enums=fresh.enums,
        rows={k: v for k, v in state.rows.items() if k[:2] not in gone},
    )


def _merged(old: Mapping[Key, T], new: Mapping[Key, T], gone: set[Key]) -> dict[Key, T]:
    merged = {k: v for k, v in old.items() if k[:2] not in gone}
    merged.update(new)
    return merged
