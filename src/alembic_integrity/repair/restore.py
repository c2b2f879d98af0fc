"""Undo a repair from its log: every row back as it was, unless it changed again since.

Rows are put back in reverse log order, so that what a repair did last is
undone first (a cascade's parent row is back before its children). The log
is cut into segments of one table, action, rule and policy; each segment is
restored by set-based statements over at most ``batch_size`` log rows, each in
a short transaction that also stamps ``restored_at`` on the log rows it put
back. A restore that stops half-way is therefore consistent and can be run
again: it only looks at log rows not yet restored.

* deleted, cascaded and quarantined rows are inserted again from their
  before-image (``jsonb_populate_record``) with their original primary key
  (``OVERRIDING SYSTEM VALUE``; generated columns are left to PostgreSQL), and
  quarantined copies are removed from the archive;
* updated rows get every column back from the before-image.

A CONFLICT is a row changed again since the repair: an updated row whose
current image differs from the logged after-image (or that was deleted), or
a deleted row whose primary key exists again. Conflicts are reported and left
alone, unless ``force``: then the before-image overwrites the current row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from ..errors import CatalogError
from ..pg import raw
from ..pg.identifiers import TableName, quote
from ..settings import Settings
from .log import (
    CHANGES_SQL,
    DEFAULT_LOG_TABLE,
    SAMPLE,
    LogTables,
    TableInfo,
    autocommit_connection,
    exclusive,
    find_table,
    format_key,
    lit,
    load_repair,
    run_short,
)


@dataclass
class RestoreGroup:
    """One table and action of the repair: rows put back, and conflicts found."""

    table: str
    action: str
    restored: int = 0
    conflicts: int = 0
    overwritten: int = 0
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "action": self.action, "restored": self.restored,
                "conflicts": self.conflicts, "overwritten": self.overwritten,
                "samples": self.samples}


@dataclass
class RestoreResult:
    repair_id: int
    log_table: str
    forced: bool
    status: str = "done"
    groups: list[RestoreGroup] = field(default_factory=list)

    @property
    def restored(self) -> int:
        return sum(g.restored for g in self.groups)

    @property
    def conflicts(self) -> int:
        """Rows left as they are now because they changed again since the repair."""
        return sum(g.conflicts for g in self.groups)

    @property
    def exit_code(self) -> int:
        return 1 if self.conflicts else 0

    def group(self, table: str, action: str) -> RestoreGroup:
        for found in self.groups:
            if (found.table, found.action) == (table, action):
                return found
        self.groups.append(RestoreGroup(table, action))
        return self.groups[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"repair_id": self.repair_id, "log_table": self.log_table, "forced": self.forced,
                "status": self.status, "restored": self.restored, "conflicts": self.conflicts,
                "groups": [g.to_dict() for g in self.groups]}

    def to_text(self) -> str:
        lines = [f"{g.table}: {g.action}: {g.restored} restored"
                 + (f", {g.overwritten} changed since and overwritten (--force)"
                    if g.overwritten else "")
                 + (f", {g.conflicts} CONFLICT(S) left as they are: {', '.join(g.samples)}"
                    + (", ..." if g.conflicts > len(g.samples) else "") if g.conflicts else "")
                 for g in self.groups]
        if self.conflicts:
            lines.append(f"repair {self.repair_id}: {self.restored} row(s) restored; "
                         f"{self.conflicts} changed again since the repair and were not "
                         f"overwritten (run again with --force to overwrite them)")
        elif not self.groups:
            lines.append(f"repair {self.repair_id}: nothing left to restore "
                         f"(status {self.status})")
        else:
            lines.append(f"repair {self.repair_id}: {self.restored} row(s) restored; "
                         f"status {self.status}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Segment:
    """Consecutive log rows of one table, action, rule and policy: restored together."""

    schema: str
    table: str
    action: str
    rule: str
    policy_index: int
    archive: TableName | None
    first: int
    last: int

    def filters(self, repair_id: int, low: int, high: int) -> str:
        return (f"l.repair_id = {int(repair_id)} AND l.log_id BETWEEN {int(low)} AND {int(high)} "
                f"AND l.restored_at IS NULL AND l.action = {lit(self.action)} "
                f"AND l.schema_name = {lit(self.schema)} AND l.table_name = {lit(self.table)} "
                f"AND l.rule = {lit(self.rule)} AND l.policy_index = {int(self.policy_index)}")


def restore(engine: Engine | Connection, repair_id: int, *, force: bool = False,
            log_table: str = DEFAULT_LOG_TABLE, batch_size: int = 10_000,
            settings: Settings | None = None) -> RestoreResult:
    """Put back every row repair ``repair_id`` changed; see the module docstring.

    Raises :class:`CatalogError` (exit 2) for an unknown repair id or log table.
    """
    log = LogTables.parse(log_table)
    settings = settings or Settings()
    result = RestoreResult(int(repair_id), log.label, force)
    with autocommit_connection(engine) as conn:
        record = load_repair(conn, log, int(repair_id))
        result.status = record.status
        with exclusive(conn, log, f"restore {repair_id}"):
            # Right after a repair the log has grown faster than autovacuum
            # analyses it; with its "never analyzed" estimate of a few rows the
            # planner joins each chunk quadratically.
            run_short(conn, f"ANALYZE {log.log_sql} (repair_id, log_id, action, schema_name, "
                            "table_name, rule, policy_index, restored_at)", settings,
                      f"restore {repair_id}: analysing the log")
            for segment in _segments(conn, log, result.repair_id):
                _restore_segment(conn, log, segment, result, batch_size, settings)
            result.status = _finish(conn, log, result.repair_id, settings)
    return result


def _segments(conn: Connection, log: LogTables, repair_id: int) -> list[Segment]:
    """Islands of consecutive log rows with the same key, newest first."""
    key = "schema_name, table_name, action, rule, policy_index"
    rows = raw.execute(conn,
        f"SELECT {key}, archive_schema, archive_table, min(log_id), max(log_id) FROM ("
        f"SELECT *, row_number() OVER (ORDER BY log_id) - row_number() OVER (PARTITION BY {key} "
        f"ORDER BY log_id) AS island FROM {log.log_sql} WHERE repair_id = {int(repair_id)} "
        f"AND action IN {CHANGES_SQL} AND restored_at IS NULL) s "
        f"GROUP BY {key}, archive_schema, archive_table, island ORDER BY max(log_id) DESC"
    ).all()
    return [Segment(r[0], r[1], r[2], r[3], int(r[4]),
                    TableName(r[6], r[5]) if r[6] else None, int(r[7]), int(r[8]))
            for r in rows]


def _restore_segment(conn: Connection, log: LogTables, segment: Segment, result: RestoreResult,
                     batch_size: int, settings: Settings) -> None:
    table = find_table(conn, TableName(segment.table, segment.schema))
    if table is None or not table.pk:
        what = "does not exist any more" if table is None else "has no primary key any more"
        raise CatalogError(f"restore {result.repair_id}: table {segment.schema}.{segment.table} "
                           f"{what}; its logged rows cannot be put back")
    archive = segment.archive if segment.archive and find_table(conn, segment.archive) else None
    group = result.group(table.label, segment.action)
    high = segment.last
    while high >= segment.first:
        low = raw.execute(conn,
            f"SELECT min(log_id) FROM (SELECT l.log_id FROM {log.log_sql} l WHERE "
            f"{segment.filters(result.repair_id, segment.first, high)} "
            f"ORDER BY l.log_id DESC LIMIT {int(batch_size)}) s"
        ).scalar()
        if low is None:
            return
        todo = f"SELECT l.* FROM {log.log_sql} l WHERE " \
               f"{segment.filters(result.repair_id, int(low), high)}"
        bounds = (f"ml.repair_id = {result.repair_id} AND "
                  f"ml.log_id BETWEEN {int(low)} AND {int(high)}")
        sql = (_update_back(table, log, todo, bounds, result.forced)
               if segment.action == "update"
               else _insert_back(table, log, todo, bounds, result.forced, archive))
        rows = run_short(conn, ["SET LOCAL jit = off", sql], settings,
                         f"restore {result.repair_id}: putting back {segment.action}d rows of "
                         f"{table.label}")
        restored, conflicts, overwritten, keys = rows[0]
        group.restored += int(restored)
        group.conflicts += int(conflicts)
        group.overwritten += int(overwritten)
        group.samples.extend(format_key(k) for k in (keys or [])[: SAMPLE - len(group.samples)])
        high = int(low) - 1


def _current(table: TableInfo, pk: str) -> str:
    """The row that has the logged primary key now, as jsonb (NULL when there is none)."""
    return (f"(SELECT to_jsonb(t) FROM jsonb_populate_record(NULL::{table.sql}, {pk}) ai_k "
            f"JOIN {table.sql} t ON {table.pk_match('t', 'ai_k')})")


def _columns(table: TableInfo, names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote(c) for c in names)


def _insert_sql(table: TableInfo, source: str, on_conflict: str = "") -> str:
    """Insert the before-images of ``source`` rows with their original keys."""
    return (f"INSERT INTO {table.sql} ({_columns(table, table.insertable)}){table.overriding} "
            f"SELECT {_columns(table, table.insertable, 'r.')} FROM {source} j "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.sql}, j.before) r"
            f"{on_conflict}")


def _upsert(table: TableInfo) -> str:
    """``--force`` on a deleted row whose key exists again: the before-image overwrites it."""
    target = f"ON CONSTRAINT {quote(table.pk_constraint)}" if table.pk_constraint \
        else f"({_columns(table, table.pk)})"
    sets = [c for c in table.updatable if c not in table.pk]
    if not sets:
        return f" ON CONFLICT {target} DO NOTHING"
    return f" ON CONFLICT {target} DO UPDATE SET " + ", ".join(
        f"{quote(c)} = EXCLUDED.{quote(c)}" for c in sets)


def _tail(log: LogTables, done: str, bounds: str) -> str:
    """Stamp the restored log rows; report counts and the conflicting keys.

    ``bounds`` (this repair, this chunk's log ids) keeps the stamping UPDATE on
    a range of the log's primary key whatever the planner thinks of ``done``.
    """
    return (f"ai_marked AS (UPDATE {log.log_sql} ml SET restored_at = clock_timestamp() "
            f"WHERE {bounds} AND ml.log_id IN (SELECT log_id FROM {done}) "
            "RETURNING ml.log_id) "
            "SELECT (SELECT count(*) FROM ai_marked), "
            f"count(*) FILTER (WHERE log_id NOT IN (SELECT log_id FROM {done})), "
            f"count(*) FILTER (WHERE conflict AND log_id IN (SELECT log_id FROM {done})), "
            f"(array_agg(pk ORDER BY log_id DESC) FILTER (WHERE log_id NOT IN "
            f"(SELECT log_id FROM {done})))[1:{SAMPLE}] FROM ai_todo")


def _insert_back(table: TableInfo, log: LogTables, todo: str, bounds: str, force: bool,
                 archive: TableName | None) -> str:
    """Deleted, cascaded or quarantined rows: insert them again where the key is free."""
    ctes = [f"ai_todo AS (SELECT l.log_id, l.pk, l.before, {_current(table, 'l.pk')} IS NOT NULL "
            f"AS conflict FROM ({todo}) l)",
            f"ai_back AS (SELECT * FROM ai_todo WHERE {'true' if force else 'NOT conflict'})",
            f"ai_ins AS ({_insert_sql(table, 'ai_back', _upsert(table) if force else '')})"]
    if archive is not None:
        ctes.append(f"ai_unarchived AS (DELETE FROM {archive.sql} a USING ai_back j WHERE "
                    f"to_jsonb(a) = to_jsonb(jsonb_populate_record(NULL::{archive.sql}, "
                    "j.before)))")
    return "WITH " + ", ".join(ctes) + ", " + _tail(log, "ai_back", bounds)


def _update_back(table: TableInfo, log: LogTables, todo: str, bounds: str,
                 force: bool) -> str:
    """Updated rows: every column from the before-image, where the row is as the repair left it.

    Each logged key is looked up once (its row's ``ctid`` and current image);
    the UPDATE then goes by ``ctid``, a TID scan. The after-image comparison
    sits in the UPDATE's own WHERE, so it is checked again on the row version
    the UPDATE locks: a change committed meanwhile makes the row a conflict
    instead of being overwritten.
    """
    sets = ", ".join(f"{quote(c)} = r.{quote(c)}" for c in table.updatable)
    unchanged = "true" if force else "to_jsonb(t) = j.after"
    found = (f"LEFT JOIN LATERAL (SELECT t.ctid AS tid, to_jsonb(t) AS cur FROM "
             f"jsonb_populate_record(NULL::{table.sql}, l.pk) ai_k JOIN {table.sql} t "
             f"ON {table.pk_match('t', 'ai_k')}) c ON true")
    ctes = [f"ai_todo AS (SELECT l.log_id, l.pk, l.before, l.after, c.tid, "
            f"c.cur IS DISTINCT FROM l.after AS conflict FROM ({todo}) l {found})",
            f"ai_upd AS (UPDATE {table.sql} AS t SET {sets} FROM ai_todo j "
            f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.sql}, j.before) r "
            "WHERE t.ctid = j.tid AND t.ctid = ANY(ARRAY(SELECT tid FROM ai_todo "
            f"WHERE tid IS NOT NULL)) AND {unchanged} RETURNING j.log_id)"]
    done = "ai_upd"
    if force:  # deleted since the repair: put the before-image back
        ctes += ["ai_missing AS (SELECT * FROM ai_todo WHERE tid IS NULL)",
                 f"ai_ins AS ({_insert_sql(table, 'ai_missing')})",
                 "ai_done AS (SELECT log_id FROM ai_upd UNION ALL SELECT log_id FROM ai_missing)"]
        done = "ai_done"
    return "WITH " + ", ".join(ctes) + ", " + _tail(log, done, bounds)


def _finish(conn: Connection, log: LogTables, repair_id: int, settings: Settings) -> str:
    """``restored`` once no changed row of the repair is left unrestored."""
    rows = run_short(conn,
        f"UPDATE {log.runs_sql} SET status = 'restored', restored_at = now() "
        f"WHERE repair_id = {int(repair_id)} AND status <> 'restored' AND NOT EXISTS ("
        f"SELECT 1 FROM {log.log_sql} WHERE repair_id = {int(repair_id)} "
        f"AND action IN {CHANGES_SQL} AND restored_at IS NULL) RETURNING status",
        settings, f"restore {repair_id}: updating the repair record")
    if rows:
        return str(rows[0][0])
    return str(raw.execute(conn, f"SELECT status FROM {log.runs_sql} WHERE repair_id = "
                                 f"{int(repair_id)}").scalar())
