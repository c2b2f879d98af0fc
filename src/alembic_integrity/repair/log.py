"""The repair log: where every changed row's before-image lives, and what repair and restore share.

Created on the first ``repair --apply`` (never by a dry run), in the log's
schema (default ``alembic_integrity``):

* ``<name>_runs``: one row per repair (``repair_id``, start and finish time,
  ``status`` running/done/restored, the selected rules, a ``summary``).
* ``<name>`` (default ``repair_log``): what each batch did, one row per batch
  and table it changed (``rows``, the ``image_table`` holding the images, the
  ``columns`` an update changed, the keyset ``cursor`` the batch reached), and
  one row per row left for a person (``refused``/``ambiguous``/``left``, with
  its primary key and the reason).
* one IMAGE TABLE per repaired table and shape, ``<name>_img_<schema>_<table>_<hash>``
  (within 63 bytes): the source table's own columns with their own types, plus
  ``_ai_repair_id``, ``_ai_batch``, ``_ai_action`` and ``_ai_restored_at``. A
  deleted, cascaded or quarantined row is copied whole; an updated row gives
  its primary key, the old values of the columns the update changed, and their
  new values in ``_ai_new_<column>`` (how restore tells whether the row changed
  again since). Values are copied as they are, never through text, so what
  restore puts back does not depend on any session setting.

Every image is written by the statement that changes its row (a data-modifying
CTE), so no row is changed without its image, and rows never travel to the
client. This module also holds what repair and restore need to know about a
table (:class:`TableInfo`) and how they run one short transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from ..errors import (
    CatalogError,
    ConfigurationError,
    IntegrityError,
    first_line,
    sqlstate,
)
from ..pg import catalog, raw
from ..pg.catalog import ColumnType
from ..pg.identifiers import TableName, check_length, quote, truncated_name
from ..pg.locks import LockNeed, is_lock_error, with_lock_retries
from ..settings import Settings

DEFAULT_LOG_TABLE = "alembic_integrity.repair_log"
DEFAULT_LOG_SCHEMA = "alembic_integrity"

CHANGE_ACTIONS = ("update", "delete", "cascade", "quarantine")
"""Actions that changed a row and that restore undoes."""
NOTE_ACTIONS = ("refused", "ambiguous", "left")
"""Actions that only record why a row was left for a person."""
SAMPLE = 10
"""Primary keys shown per reason in results and reports."""

INSUFFICIENT_PRIVILEGE = "42501"
READ_ONLY_TRANSACTION = "25006"
LOCK_WAIT_FOR_PEER_S = 10

IMAGE_META = ("_ai_repair_id", "_ai_batch", "_ai_action", "_ai_restored_at")
"""The image tables' own columns; a source column of one of these names is refused."""

LOG_COLUMNS = ("repair_id", "batch", "schema_name", "table_name", "rule", "policy",
               "policy_index", "action", "rows", "image_table", "columns", "pk", "cursor",
               "archive_schema", "archive_table", "note", "detail")

BATCH_SETTINGS = ("SELECT set_config('extra_float_digits', '3', true), "
                  "set_config('jit', 'off', true), set_config('work_mem', CASE WHEN "
                  "pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('64MB') THEN '64MB' "
                  "ELSE current_setting('work_mem') END, true)")
"""Every repair and restore transaction: the keyset cursor and the logged keys are
jsonb, whose float output follows ``extra_float_digits``, and 3 makes them exact;
no JIT, whose compilation of these one-off statements costs more than it saves;
and ``work_mem`` of at least 64MB, room for a batch's changed rows with their
images, which a CTE read twice keeps (in the default 4MB, 10,000 updated rows
spill to a temporary file)."""


def lit(value: str | int | bool | None) -> str:
    """A SQL literal for our own names and labels (rule ids, table names, actions).

    Policy values never come here: they are bound parameters. No ``%`` is
    doubled: literal SQL goes to the server verbatim (see ``pg.raw``).
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if "\x00" in value:
        raise ConfigurationError(f"{value!r}: PostgreSQL text cannot hold a NUL character")
    return "'" + value.replace("'", "''") + "'"


CHANGES_SQL = "(" + ", ".join(lit(a) for a in CHANGE_ACTIONS) + ")"
"""``CHANGE_ACTIONS`` as a SQL list, for ``action IN ...``."""


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableInfo:
    """What repairing and restoring a table's rows needs: its real schema, key and columns.

    ``only`` marks a table of an inheritance tree repaired on its own (``FROM
    ONLY``): a child may add columns and has a key of its own, so each member is
    its own unit. A partitioned table is one unit: its key is unique over its
    partitions and they share its columns.
    """

    oid: int
    schema: str
    name: str
    pk: tuple[str, ...]
    pk_constraint: str | None
    columns: tuple[ColumnType, ...]
    only: bool = False
    partitioned: bool = False

    @property
    def sql(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def scan(self) -> str:
        """The table as FROM / UPDATE / DELETE name it: ``ONLY`` for an inheritance member."""
        return f"ONLY {self.sql}" if self.only else self.sql

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnType | None:
        return next((c for c in self.columns if c.name == name), None)

    def pk_json(self, alias: str) -> str:
        """The primary key of ``alias`` as ``jsonb``: how the log names a row for people.

        A table without a primary key gets its ``ctid``: good for showing a row,
        useless for logging one, so repair never writes to such a table.
        """
        if not self.pk:
            return f"jsonb_build_object('ctid', {alias}.ctid::text)"
        pairs = ", ".join(f"{lit(c)}, {alias}.{quote(c)}" for c in self.pk)
        return f"jsonb_build_object({pairs})"

    def pk_list(self, alias: str) -> str:
        return ", ".join(f"{alias}.{quote(c)}" for c in self.pk)

    def pk_match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in self.pk)

    @property
    def insertable(self) -> tuple[str, ...]:
        """Columns a restore writes: all but generated ones (PostgreSQL computes those)."""
        return tuple(c.name for c in self.columns if not c.generated)

    @property
    def updatable(self) -> tuple[str, ...]:
        """Columns an UPDATE may set: not generated, not GENERATED ALWAYS identity."""
        return tuple(c.name for c in self.columns if not c.generated and not c.identity_always)

    @property
    def overriding(self) -> str:
        return " OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in self.columns) \
            else ""

    @property
    def signature(self) -> str:
        """A short hash of the table's name and column types: one image table per shape."""
        shape = "|".join([self.schema, self.name, *(f"{c.name}:{c.type_sql}"
                                                    for c in self.columns)])
        return hashlib.sha1(shape.encode("utf-8")).hexdigest()[:8]


def format_key(pk: Any) -> str:
    """A logged primary key for people: the value alone for one column, else the JSON."""
    if isinstance(pk, dict) and len(pk) == 1:
        return str(next(iter(pk.values())))
    return json.dumps(pk, default=str)


def load_table(conn: Connection, oid: int, *, only: bool = False) -> TableInfo:
    rel = catalog.relation(conn, oid)
    return TableInfo(oid, rel.schema, rel.name, tuple(catalog.primary_key(conn, oid)),
                     rel.pk_name, tuple(catalog.table_columns(conn, oid)), only=only,
                     partitioned=rel.partitioned)


def find_table(conn: Connection, table: TableName) -> TableInfo | None:
    oid = catalog.table_oid(conn, table)
    return load_table(conn, oid) if oid is not None else None


# --------------------------------------------------------------------------- the log tables


@dataclass(frozen=True)
class LogTables:
    """The log table, its runs table and image tables, from ``schema.table``."""

    schema: str
    name: str

    @classmethod
    def parse(cls, spec: str) -> LogTables:
        schema, dot, name = spec.strip().rpartition(".")
        if not name or (dot and not schema) or "." in schema:
            raise ConfigurationError(
                f"--log-table {spec!r}: expected schema.table, e.g. {DEFAULT_LOG_TABLE}"
            )
        schema = schema or DEFAULT_LOG_SCHEMA
        check_length(schema, "log schema name")
        check_length(name, "log table name")
        return cls(schema, name)

    @property
    def runs_name(self) -> str:
        return truncated_name(self.name, "_runs")

    @property
    def log_sql(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def runs_sql(self) -> str:
        return f"{quote(self.schema)}.{quote(self.runs_name)}"

    @property
    def batch_seq_sql(self) -> str:
        return f"{quote(self.schema)}.{quote(truncated_name(self.name, '_batch_seq'))}"

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def lock_key(self) -> str:
        """SQL for the advisory lock that serialises repairs and restores on this log."""
        return f"hashtextextended({lit('alembic_integrity repair ' + self.label)}, 0)"

    def image_name(self, table: TableInfo, suffix: str = "") -> str:
        """The image table of ``table`` in its current shape, at most 63 bytes (or the
        name of one of its indexes, with ``suffix``)."""
        return truncated_name(f"{self.name}_img_{table.schema}_{table.name}",
                              f"_{table.signature}{suffix}")

    def image_sql(self, name: str) -> str:
        return f"{quote(self.schema)}.{quote(name)}"

    def create_sql(self) -> list[str]:
        """Idempotent DDL of the runs and log tables and the batch sequence.

        The log holds one row per batch (and per row left for a person), so it
        stays small; its primary key ``(repair_id, log_id)`` is what the summary
        and restore select by. A log from an older version gains the new columns.
        """
        added = ", ".join(f"ADD COLUMN IF NOT EXISTS {c}" for c in (
            "batch bigint", "rows bigint NOT NULL DEFAULT 1", "image_table text",
            "columns text[]", "cursor jsonb"))
        return [
            f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}",
            f"""CREATE TABLE IF NOT EXISTS {self.runs_sql} (
                repair_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                started_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz,
                restored_at timestamptz,
                status text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'done', 'restored')),
                started_by text NOT NULL DEFAULT current_user,
                rules jsonb NOT NULL,
                batch_size integer,
                summary jsonb)""",
            f"""CREATE TABLE IF NOT EXISTS {self.log_sql} (
                log_id bigint GENERATED ALWAYS AS IDENTITY,
                repair_id bigint NOT NULL,
                batch bigint,
                logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                schema_name text NOT NULL,
                table_name text NOT NULL,
                rule text NOT NULL,
                policy text NOT NULL,
                policy_index integer NOT NULL,
                action text NOT NULL,
                rows bigint NOT NULL DEFAULT 1,
                image_table text,
                columns text[],
                pk jsonb,
                cursor jsonb,
                archive_schema text,
                archive_table text,
                note text,
                detail text,
                restored_at timestamptz,
                PRIMARY KEY (repair_id, log_id))""",
            f"ALTER TABLE {self.log_sql} {added}",
            f"ALTER TABLE {self.log_sql} ALTER COLUMN pk DROP NOT NULL",
            f"CREATE SEQUENCE IF NOT EXISTS {self.batch_seq_sql}",
        ]

    def image_ddl(self, table: TableInfo, new_columns: Sequence[str] = ()) -> list[str]:
        """Create the image table of ``table`` like it (types, not constraints), idempotently.

        ``new_columns``: columns an update changes, whose new values get a
        ``_ai_new_`` column. One BRIN index on ``_ai_batch`` (batches append in
        order, so it costs the inserts next to nothing) for restore, which reads
        the images batch by batch.
        """
        clash = [c.name for c in table.columns if c.name in IMAGE_META
                 or c.name.startswith("_ai_new_")]
        if clash:
            raise ConfigurationError(f"table {table.label}: column {clash[0]} has a name the "
                                     "repair log's image tables reserve; rename it to repair")
        image = self.image_sql(self.image_name(table))
        columns = ", ".join(f"{quote(c.name)} {c.type_sql}" for c in table.columns)
        ddl = [f"CREATE TABLE IF NOT EXISTS {image} (_ai_repair_id bigint NOT NULL, "
               "_ai_batch bigint NOT NULL, _ai_action text NOT NULL, "
               f"_ai_restored_at timestamptz, {columns})",
               f"CREATE INDEX IF NOT EXISTS {quote(self.image_name(table, '_batch'))} "
               f"ON {image} USING brin (_ai_batch) WITH (pages_per_range = 16)"]
        for name in new_columns:
            column = table.column(name)
            if column is not None:
                ddl.append(f"ALTER TABLE {image} ADD COLUMN IF NOT EXISTS "
                           f"{quote(new_column(name))} {column.type_sql}")
        return ddl

    def index_sql(self) -> str:
        """The hash index on ``pk`` for the look-ups of rows already noted (idempotent).

        Built only when a repair notes rows (refusals): most never do.
        """
        by_key = quote(truncated_name(self.name, "_pk_hash"))
        return f"CREATE INDEX IF NOT EXISTS {by_key} ON {self.log_sql} USING hash (pk)"

    def exists(self, conn: Connection) -> bool:
        both = conn.execute(
            text("SELECT to_regclass(format('%I.%I', CAST(:s AS text), CAST(:l AS text))) "
                 "IS NOT NULL AND to_regclass(format('%I.%I', CAST(:s AS text), "
                 "CAST(:r AS text))) IS NOT NULL"),
            {"s": self.schema, "l": self.name, "r": self.runs_name},
        ).scalar()
        return bool(both)

    def not_noted(self, repair_id: int, table: TableInfo, rule: str, pk_json: str) -> str:
        """True for a row this repair has not left for a person yet under ``rule``."""
        return (f"NOT EXISTS (SELECT 1 FROM {self.log_sql} ai_l WHERE ai_l.repair_id = "
                f"{int(repair_id)} AND ai_l.schema_name = {lit(table.schema)} AND "
                f"ai_l.table_name = {lit(table.name)} AND ai_l.pk = {pk_json} "
                f"AND ai_l.rule = {lit(rule)})")


def new_column(name: str) -> str:
    """The image column holding the value an update gave ``name``."""
    return truncated_name("_ai_new_" + name)


@dataclass(frozen=True)
class RepairRecord:
    repair_id: int
    status: str
    rules: list[str]
    started_at: Any
    finished_at: Any


def load_repair(conn: Connection, tables: LogTables, repair_id: int) -> RepairRecord:
    """The repair's record, or a clear error naming the repairs that do exist."""
    if not tables.exists(conn):
        raise CatalogError(
            f"no repair log {tables.label} in this database: nothing was repaired with "
            "--apply here (or pass the --log-table it used)"
        )
    row = raw.execute(conn,
        # Times as ISO text from jsonb: the client's parser knows only DateStyle ISO.
        "SELECT repair_id, status, rules, to_jsonb(started_at) #>> '{}', "
        f"to_jsonb(finished_at) #>> '{{}}' FROM {tables.runs_sql} "
        f"WHERE repair_id = {int(repair_id)}"
    ).one_or_none()
    if row is None:
        recent = raw.execute(conn,
            f"SELECT repair_id FROM {tables.runs_sql} ORDER BY repair_id DESC LIMIT 5"
        ).scalars().all()
        known = ", ".join(str(r) for r in recent) or "none"
        raise CatalogError(f"repair {repair_id} not found in {tables.label} "
                           f"(most recent repair ids: {known})")
    return RepairRecord(int(row[0]), row[1], list(row[2]), row[3], row[4])


# --------------------------------------------------------------------------- transactions


def autocommit_connection(bind: Engine | Connection) -> contextlib.AbstractContextManager[
        Connection]:
    """A connection on which we issue BEGIN/COMMIT ourselves, like the executor does.

    A caller's connection (an operation's hook) must already be in autocommit
    mode: we commit between batches, which a caller's transaction forbids.
    """
    if isinstance(bind, Engine):
        return _own_connection(bind)
    driver = bind.connection.driver_connection
    if not getattr(driver, "autocommit", False):
        raise ConfigurationError(
            "repair commits after every batch, so it needs a connection in AUTOCOMMIT mode "
            "(an Engine, or inside Alembic's autocommit_block()); this one is in a transaction"
        )
    return contextlib.nullcontext(bind)


@contextlib.contextmanager
def _own_connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def transaction(conn: Connection, *, read_only: bool = False) -> Iterator[Connection]:
    """One explicit transaction; REPEATABLE READ READ ONLY for a dry run's single snapshot."""
    raw.execute(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if read_only else "BEGIN")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(Exception):
            raw.execute(conn, "ROLLBACK")
        raise
    raw.execute(conn, "ROLLBACK" if read_only else "COMMIT")


def run_short(conn: Connection, sql: str | list[str], settings: Settings,
              doing: str, locks: Sequence[LockNeed] = (),
              params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql`` in its own transaction under ``lock_timeout``, retrying lock waits.

    Each batch is such a transaction, so row locks last one batch, and a crash
    between batches leaves every committed batch complete with its log rows.
    ``locks``: the tables the batch writes and how, looked at in ``pg_locks``
    before each attempt (``pg.locks``); without them only the short, escalating
    ``lock_timeout`` and the retries apply. ``params`` are the bound values the
    statements name (``pg.raw.param``).
    """
    statements = [sql] if isinstance(sql, str) else sql

    def once(lock_timeout_ms: int) -> list[tuple[Any, ...]]:
        with transaction(conn):
            raw.execute(conn, f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            raw.execute(conn, BATCH_SETTINGS)
            result = None
            for statement in statements:
                result = raw.execute(conn, statement, params)
            return [tuple(r) for r in result] if result is not None and \
                result.returns_rows else []

    try:
        rows, _ = with_lock_retries(once, settings, doing, conn=conn, needs=locks, hint=(
            "this batch changed nothing; run again when the blocking session is done (the "
            "repair resumes where it stopped)"))
    except DBAPIError as err:  # lock waits never get here: with_lock_retries raises for them
        raise translate(err, doing) from err
    return rows


def translate(err: DBAPIError, doing: str) -> IntegrityError:
    """A database error as one line for a person, saying what was being done."""
    code = sqlstate(err)
    message = first_line(err)
    if code == INSUFFICIENT_PRIVILEGE:
        return IntegrityError(f"{doing}: {message}; this role cannot write there, nothing of "
                              "this step was written")
    if code == READ_ONLY_TRANSACTION:
        return IntegrityError(f"{doing}: {message} (the session is read-only); nothing of "
                              "this step was written")
    if code and code.startswith("23"):
        return IntegrityError(f"{doing}: a constraint rejects the rows: {message} (SQLSTATE "
                              f"{code}); nothing of this step was written")
    return IntegrityError(f"{doing}: PostgreSQL said: {message} (SQLSTATE {code})")


@contextlib.contextmanager
def exclusive(conn: Connection, tables: LogTables, doing: str) -> Iterator[None]:
    """One repair or restore at a time per log: a session advisory lock.

    It is released when the session ends, also by a crash, so a ``running``
    repair whose lock we get is known to be dead and may be resumed. We wait a
    few seconds for it: a killed client's server session ends only when the
    server notices.
    """
    try:
        with transaction(conn):
            raw.execute(conn, f"SET LOCAL lock_timeout = '{LOCK_WAIT_FOR_PEER_S}s'")
            raw.execute(conn, f"SELECT pg_advisory_lock({tables.lock_key})")
    except DBAPIError as err:
        if is_lock_error(err):
            raise IntegrityError(
                f"{doing}: another repair or restore using {tables.label} is running; "
                "wait for it to finish"
            ) from err
        raise translate(err, doing) from err
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            raw.execute(conn, f"SELECT pg_advisory_unlock({tables.lock_key})")
