"""Undo a repair from its log: every row back as it was, unless it changed again since.

The repair's batches are undone newest first, one short transaction per
batch and table (a cascade's parent rows are back before their children).
Each transaction copies the values back from the image table, as typed
values (never through text: no session setting changes what comes back),
and stamps ``_ai_restored_at`` on the images it put back; a batch whose
images are all back is stamped ``restored_at`` in the log. A restore that stops
half-way is consistent and can be run again: it only looks at what is not
restored yet.

* deleted, cascaded and quarantined rows are inserted again with their
  original primary key (``OVERRIDING SYSTEM VALUE``; generated columns are left
  to PostgreSQL), and quarantined copies are removed from the archive;
* updated rows get the columns the repair changed back.

Columns are matched by name: a column dropped since the repair cannot be put
back, and a column added since gets its default in a re-inserted row; the
result says both. A CONFLICT is a row changed again since the repair: an
updated row whose changed columns no longer hold, byte for byte, what the
repair wrote (``record_image_eq``), or that was deleted since; a deleted row
whose primary key exists again. Conflicts are reported and left alone, unless
``force``: then the logged values overwrite the current row (an updated row
deleted since cannot come back: only its changed columns were logged).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine

from ..errors import CatalogError
from ..pg import catalog, raw
from ..pg.catalog import ColumnType
from ..pg.identifiers import TableName, quote
from ..pg.progress import Progress, ProgressCallback
from ..settings import Settings
from .log import (
    CHANGES_SQL,
    DEFAULT_LOG_TABLE,
    IMAGE_META,
    SAMPLE,
    LogTables,
    TableInfo,
    autocommit_connection,
    exclusive,
    find_table,
    format_key,
    lit,
    load_repair,
    new_column,
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
    notes: list[str] = field(default_factory=list)
    """What could not be restored as logged (columns dropped or added since)."""

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

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
                "groups": [g.to_dict() for g in self.groups], "notes": self.notes}

    def to_text(self) -> str:
        lines = [f"{g.table}: {g.action}: {g.restored} restored"
                 + (f", {g.overwritten} changed since and overwritten (--force)"
                    if g.overwritten else "")
                 + (f", {g.conflicts} CONFLICT(S) left as they are: {', '.join(g.samples)}"
                    + (", ..." if g.conflicts > len(g.samples) else "") if g.conflicts else "")
                 for g in self.groups]
        lines += [f"note: {n}" for n in self.notes]
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
class Step:
    """One batch of the repair on one table and action: restored in one transaction."""

    repair_id: int
    log_id: int
    batch: int
    schema: str
    table: str
    action: str
    image: str
    columns: tuple[str, ...] | None
    archive: TableName | None
    rows: int


@dataclass(frozen=True)
class Shapes:
    """The table now and its image table: the columns they share by name."""

    table: TableInfo
    image: str
    image_columns: dict[str, ColumnType]

    def shared(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n in self.image_columns]


def restore(engine: Engine | Connection, repair_id: int, *, force: bool = False,
            log_table: str = DEFAULT_LOG_TABLE, batch_size: int = 10_000,
            settings: Settings | None = None, progress: ProgressCallback | None = None
            ) -> RestoreResult:
    """Put back every row repair ``repair_id`` changed; see the module docstring.

    Each transaction restores one batch of the repair, so ``batch_size`` (kept
    for compatibility) has no effect: the repair's own batch size bounds them.
    Raises :class:`CatalogError` (exit 2) for an unknown repair id or log table.
    """
    del batch_size
    log = LogTables.parse(log_table)
    settings = settings or Settings()
    result = RestoreResult(int(repair_id), log.label, force)
    with autocommit_connection(engine) as conn:
        record = load_repair(conn, log, int(repair_id))
        result.status = record.status
        with exclusive(conn, log, f"restore {repair_id}"):
            # Right after a repair the log has grown faster than autovacuum analyses it.
            run_short(conn, f"ANALYZE {log.log_sql}", settings,
                      f"restore {repair_id}: analysing the log")
            steps = _steps(conn, log, result.repair_id)
            total, done, began = sum(s.rows for s in steps), 0, time.monotonic()
            shapes: dict[tuple[str, str, str], Shapes] = {}
            for step in steps:
                key = (step.schema, step.table, step.image)
                if key not in shapes:
                    shapes[key] = _shapes(conn, log, step, result)
                done += _restore_step(conn, log, step, shapes[key], result, settings)
                if progress is not None:
                    progress(Progress(f"{step.schema}.{step.table}", done, total,
                                             done / max(time.monotonic() - began, 1e-6)))
            result.status = _finish(conn, log, result.repair_id, settings)
    return result


def _steps(conn: Connection, log: LogTables, repair_id: int) -> list[Step]:
    """The repair's batches not restored yet, newest first, parents before cascades."""
    rows = raw.execute(conn,
        "SELECT log_id, batch, schema_name, table_name, action, image_table, columns, "
        f"archive_schema, archive_table, rows FROM {log.log_sql} WHERE repair_id = "
        f"{int(repair_id)} AND action IN {CHANGES_SQL} AND restored_at IS NULL AND rows > 0 "
        "ORDER BY batch DESC NULLS LAST, action = 'cascade', log_id DESC"
    ).all()
    if any(r[5] is None for r in rows):
        raise CatalogError(f"restore {repair_id}: this repair was logged by an older version of "
                           "alembic-integrity (JSON images); restore it with that version")
    return [Step(int(repair_id), int(r[0]), int(r[1]), r[2], r[3], r[4], r[5],
                 tuple(r[6]) if r[6] is not None else None,
                 TableName(r[8], r[7]) if r[8] else None, int(r[9])) for r in rows]


def _shapes(conn: Connection, log: LogTables, step: Step, result: RestoreResult) -> Shapes:
    """The table as it is now, matched by column name with its image table."""
    found = find_table(conn, TableName(step.table, step.schema))
    if found is None or not found.pk:
        what = "does not exist any more" if found is None else "has no primary key any more"
        raise CatalogError(f"restore {result.repair_id}: table {step.schema}.{step.table} "
                           f"{what}; its logged rows cannot be put back")
    image_oid = catalog.table_oid(conn, TableName(step.image, log.schema))
    if image_oid is None:
        raise CatalogError(f"restore {result.repair_id}: the image table {log.schema}."
                           f"{step.image} of {found.label} does not exist any more; its rows "
                           "cannot be put back")
    table = replace(found, only=not found.partitioned)
    columns = {c.name: c for c in catalog.table_columns(conn, image_oid)
               if c.name not in IMAGE_META and not c.name.startswith("_ai_new_")}
    return Shapes(table, step.image, columns)


def _restore_step(conn: Connection, log: LogTables, step: Step, shapes: Shapes,
                  result: RestoreResult, settings: Settings) -> int:
    table = shapes.table
    group = result.group(table.label, step.action)
    if step.action == "update":
        sql = _update_back(log, step, shapes, result)
    else:
        archive = step.archive if step.archive and find_table(conn, step.archive) else None
        sql = _insert_back(log, step, shapes, result, archive)
    rows = run_short(conn, ["SET LOCAL jit = off", sql], settings,
                     f"restore {result.repair_id}: putting back {step.action}d rows of "
                     f"{table.label}")
    restored, conflicts, overwritten, keys, missing = rows[0]
    if int(missing):
        result.note(f"{table.label}: {int(missing)} updated row(s) were deleted since the "
                    "repair; only their key and changed columns were logged, so they cannot "
                    "be put back (--force cannot either)")
    group.restored += int(restored)
    group.conflicts += int(conflicts)
    group.overwritten += int(overwritten)
    group.samples.extend(format_key(k) for k in (keys or [])[: SAMPLE - len(group.samples)])
    return int(restored)


def _pk_exists(table: TableInfo, alias: str) -> str:
    return (f"EXISTS (SELECT 1 FROM {table.scan} ai_t WHERE "
            f"{table.pk_match('ai_t', alias)})")


def _insert_back(log: LogTables, step: Step, shapes: Shapes, result: RestoreResult,
                 archive: TableName | None) -> str:
    """Deleted, cascaded or quarantined rows: insert them again where the key is free."""
    table, force = shapes.table, result.forced
    columns = shapes.shared(table.insertable)
    for name in table.insertable:
        if name not in shapes.image_columns:
            result.note(f"{table.label}.{name} did not exist at the repair: rows put back "
                        "get its default")
    for name in shapes.image_columns:
        if table.column(name) is None:
            result.note(f"{table.label}.{name} was dropped since the repair: its logged "
                        "values could not be put back")
    names = ", ".join(quote(c) for c in columns)
    values = ", ".join(f"j.{quote(c)}" for c in columns)
    upsert = _upsert(table, columns) if force else ""
    ctes = [_todo(log, step, shapes, _pk_exists(table, "i")),
            f"ai_back AS (SELECT * FROM ai_todo WHERE {'true' if force else 'NOT _ai_conflict'})",
            f"ai_ins AS (INSERT INTO {table.sql} ({names}){table.overriding} "
            f"SELECT {values} FROM ai_back j{upsert})"]
    if archive is not None:
        ctes.append(_unarchive(archive, shapes))
    return "WITH " + ", ".join(ctes) + ", " + _tail(log, step, shapes, "ai_back")


def _todo(log: LogTables, step: Step, shapes: Shapes, conflict: str, join: str = "",
          extra: str = "") -> str:
    """The step's images not restored yet, each with ``_ai_conflict``."""
    image = log.image_sql(shapes.image)
    return (f"ai_todo AS (SELECT i.ctid AS _ai_itid, i.*{extra}, {conflict} AS _ai_conflict "
            f"FROM {image} i{join} WHERE i._ai_repair_id = {int(step.repair_id)} "
            f"AND i._ai_batch = {int(step.batch)} AND i._ai_action = {lit(step.action)} "
            "AND i._ai_restored_at IS NULL)")


def _unarchive(archive: TableName, shapes: Shapes) -> str:
    """Remove the quarantined copies: archive rows equal, byte for byte, to an image."""
    columns = [c for c in shapes.image_columns if c in shapes.table.names]
    left = ", ".join(f"a.{quote(c)}" for c in columns)
    right = ", ".join(f"j.{quote(c)}" for c in columns)
    return (f"ai_unarchived AS (DELETE FROM {archive.sql} a USING ai_back j WHERE "
            f"{shapes.table.pk_match('a', 'j')} AND record_image_eq(ROW({left}), ROW({right})))")


def _upsert(table: TableInfo, columns: Sequence[str]) -> str:
    """``--force`` on a deleted row whose key exists again: the logged row overwrites it."""
    target = f"ON CONSTRAINT {quote(table.pk_constraint)}" if table.pk_constraint \
        else f"({', '.join(quote(c) for c in table.pk)})"
    sets = [c for c in columns if c in table.updatable and c not in table.pk]
    if not sets:
        return f" ON CONFLICT {target} DO NOTHING"
    return f" ON CONFLICT {target} DO UPDATE SET " + ", ".join(
        f"{quote(c)} = EXCLUDED.{quote(c)}" for c in sets)


def _tail(log: LogTables, step: Step, shapes: Shapes, done: str, missing: str = "0") -> str:
    """Stamp the restored images (and the step, once all are back); report counts and the
    conflicting keys."""
    image = log.image_sql(shapes.image)
    pk = shapes.table.pk_json("ai_todo")
    return (f"ai_marked AS (UPDATE {image} mi SET _ai_restored_at = clock_timestamp() "
            f"WHERE mi.ctid = ANY(ARRAY(SELECT _ai_itid FROM {done})) "
            f"AND mi._ai_batch = {int(step.batch)} RETURNING 1), "
            f"ai_step AS (UPDATE {log.log_sql} ml SET restored_at = clock_timestamp() "
            f"WHERE ml.repair_id = {int(step.repair_id)} AND ml.log_id = {int(step.log_id)} "
            f"AND (SELECT count(*) FROM ai_todo) = (SELECT count(*) FROM {done}) RETURNING 1) "
            "SELECT (SELECT count(*) FROM ai_marked), "
            f"count(*) FILTER (WHERE _ai_itid NOT IN (SELECT _ai_itid FROM {done})), "
            f"count(*) FILTER (WHERE _ai_conflict AND _ai_itid IN (SELECT _ai_itid FROM {done})), "
            f"(array_agg({pk}) FILTER (WHERE _ai_itid NOT IN "
            f"(SELECT _ai_itid FROM {done})))[1:{SAMPLE}], {missing} FROM ai_todo")


def _update_back(log: LogTables, step: Step, shapes: Shapes, result: RestoreResult) -> str:
    """Updated rows: the changed columns back, where the row is as the repair left it.

    Each logged key is looked up once (its row's ``ctid``); the UPDATE then goes
    by ``ctid`` and key. The comparison with what the repair wrote sits in the
    UPDATE's own WHERE, so it is checked again on the row version the UPDATE
    locks: a change committed meanwhile makes the row a conflict instead of
    being overwritten.
    """
    table, force = shapes.table, result.forced
    changed = step.columns or ()
    back = [c for c in changed if c in table.updatable and c in shapes.image_columns]
    for name in changed:
        if name not in back:
            result.note(f"{table.label}.{name} was dropped (or became generated) since the "
                        "repair: the values the repair changed could not be put back")
    now = ", ".join(f"{alias}.{quote(c)}" for alias in ("t",) for c in back)
    wrote = ", ".join(f"CAST(j.{quote(new_column(c))} AS {_type(table, c)})" for c in back)
    same = f"record_image_eq(ROW({now}), ROW({wrote}))" if back else "true"
    found = (" LEFT JOIN LATERAL (SELECT ai_t.ctid AS tid, record_image_eq(ROW("
             + ", ".join(f"ai_t.{quote(c)}" for c in back) + "), ROW("
             + ", ".join(f"CAST(i.{quote(new_column(c))} AS {_type(table, c)})" for c in back)
             + f")) AS same FROM {table.scan} ai_t WHERE {table.pk_match('ai_t', 'i')}) c ON true"
             ) if back else (f" LEFT JOIN LATERAL (SELECT ai_t.ctid AS tid, true AS same FROM "
                             f"{table.scan} ai_t WHERE {table.pk_match('ai_t', 'i')}) c ON true")
    sets = ", ".join(f"{quote(c)} = j.{quote(c)}" for c in back) or \
        ", ".join(f"{quote(c)} = t.{quote(c)}" for c in table.pk)
    check = "true" if force else same
    key_match = table.pk_match("t", "j")
    ctes = [_todo(log, step, shapes, "(c.tid IS NULL OR NOT c.same)", found,
                  ", c.tid AS _ai_tid"),
            f"ai_upd AS (UPDATE {table.scan} AS t SET {sets} FROM ai_todo j "
            f"WHERE t.ctid = j._ai_tid AND {key_match} AND {check} RETURNING j._ai_itid)"]
    return "WITH " + ", ".join(ctes) + ", " + _tail(
        log, step, shapes, "ai_upd", "count(*) FILTER (WHERE _ai_tid IS NULL)")


def _type(table: TableInfo, name: str) -> str:
    column = table.column(name)
    return column.type_sql if column else "text"


def _finish(conn: Connection, log: LogTables, repair_id: int, settings: Settings) -> str:
    """``restored`` once no changed row of the repair is left unrestored."""
    rows = run_short(conn,
        f"UPDATE {log.runs_sql} SET status = 'restored', restored_at = now() "
        f"WHERE repair_id = {int(repair_id)} AND status <> 'restored' AND NOT EXISTS ("
        f"SELECT 1 FROM {log.log_sql} WHERE repair_id = {int(repair_id)} "
        f"AND action IN {CHANGES_SQL} AND restored_at IS NULL AND rows > 0) RETURNING status",
        settings, f"restore {repair_id}: updating the repair record")
    if rows:
        return str(rows[0][0])
    return str(raw.execute(conn, f"SELECT status FROM {log.runs_sql} WHERE repair_id = "
                                 f"{int(repair_id)}").scalar())
