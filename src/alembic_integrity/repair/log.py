"""The repair log: where every changed row's before-image lives, and what repair and restore share.

Two tables, created on the first ``repair --apply`` (never by a dry run):

* ``<schema>.<name>`` (default ``alembic_integrity.repair_log``): one row per
  row a repair touched or declined to touch: the row's primary key and
  before-image as ``jsonb`` (``to_jsonb`` of the row), the after-image for
  updates (so that restore can tell whether the row changed again since), the
  rule, the policy, the action, and ``restored_at``. Rows a policy refused
  (``refused``/``ambiguous``/``left``) are logged too, with the reason: a
  resumed run then skips them instead of trying again, and the report can name
  them.
* ``<schema>.<name>_runs``: one row per repair (``repair_id``, start and finish
  time, ``status`` running/done/restored, the selected rules, a ``summary``).

The log is written by the same statement that changes the rows, so a row is
never changed without its before-image, and rows never travel to the client.
This module also holds what both ``repair`` and ``restore`` need to know about
a table (:class:`TableInfo`) and how they run one short transaction.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import literal

from ..compat import pg_dialect
from ..errors import (
    CatalogError,
    ConfigurationError,
    IntegrityError,
    LockRetriesExhausted,
    first_line,
    sqlstate,
)
from ..pg import catalog, raw
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

_DIALECT = pg_dialect()

LOG_COLUMNS = ("repair_id", "schema_name", "table_name", "rule", "policy", "policy_index",
               "action", "pk", "before", "after", "archive_schema", "archive_table", "note",
               "detail")


def lit(value: Any) -> str:
    """A Python value as a SQL literal, rendered by SQLAlchemy (never pasted)."""
    if value is None:
        return "NULL"
    return str(literal(value).compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))


CHANGES_SQL = "(" + ", ".join(lit(a) for a in CHANGE_ACTIONS) + ")"
"""``CHANGE_ACTIONS`` as a SQL list, for ``action IN ...``."""


# --------------------------------------------------------------------------- the log tables


@dataclass(frozen=True)
class LogTables:
    """The log table and its runs table, from ``schema.table`` (schema defaults to ours)."""

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
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def lock_key(self) -> str:
        """SQL for the advisory lock that serialises repairs and restores on this log."""
        return f"hashtextextended({lit('alembic_integrity repair ' + self.label)}, 0)"

    def create_sql(self) -> list[str]:
        """Idempotent DDL of the two tables.

        Every batch writes the log, so it carries one index: the primary key
        ``(repair_id, log_id)``, what the summary and restore select by
        (inserts land at its right edge). The hash index on ``pk`` that the
        guard's look-ups need is created by :meth:`index_sql` only when a
        repair first looks rows up in the log. ``log_id`` alone is unique by
        construction (GENERATED ALWAYS). No foreign key to the runs table: its
        check per logged row would cost about a tenth of a repair.
        """
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
                logged_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                schema_name text NOT NULL,
                table_name text NOT NULL,
                rule text NOT NULL,
                policy text NOT NULL,
                policy_index integer NOT NULL,
                action text NOT NULL,
                pk jsonb NOT NULL,
                before jsonb,
                after jsonb,
                archive_schema text,
                archive_table text,
                note text,
                detail text,
                restored_at timestamptz,
                PRIMARY KEY (repair_id, log_id))""",
        ]

    def index_sql(self) -> str:
        """The hash index on ``pk`` for the guard's equality look-ups (idempotent).

        Not part of :meth:`create_sql`: maintaining it costs a repair that never
        looks a row up in its log (no resume, no refusal, every change fixed its
        row) about a tenth of its time, so it is built the first time a repair
        needs it, and kept from then on.
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

    def guard(self, repair_id: int, table: TableInfo, rule: str, pk_json: str) -> str:
        """True for a row this repair has not logged yet for ``rule``: resume and no-loop guard."""
        return (f"NOT EXISTS (SELECT 1 FROM {self.log_sql} ai_l WHERE ai_l.repair_id = "
                f"{int(repair_id)} AND ai_l.schema_name = {lit(table.schema)} AND "
                f"ai_l.table_name = {lit(table.name)} AND ai_l.pk = {pk_json} "
                f"AND ai_l.rule = {lit(rule)})")


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
        f"SELECT repair_id, status, rules, started_at, finished_at FROM {tables.runs_sql} "
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


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TableInfo:
    """What logging and restoring a table's rows needs: its real schema, key and columns."""

    oid: int
    schema: str
    name: str
    pk: tuple[str, ...]
    pk_constraint: str | None
    columns: tuple[str, ...]
    generated: frozenset[str]
    identity_always: frozenset[str]

    @property
    def sql(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def pk_json(self, alias: str) -> str:
        """The primary key of ``alias`` as ``jsonb``: how the log names a row.

        A table without a primary key gets its ``ctid``: good for showing a row,
        useless for logging one, so repair never writes to such a table.
        """
        if not self.pk:
            return f"jsonb_build_object('ctid', {alias}.ctid::text)"
        pairs = ", ".join(f"{lit(c)}, {alias}.{quote(c)}" for c in self.pk)
        return f"jsonb_build_object({pairs})"

    def pk_match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{quote(c)} = {right}.{quote(c)}" for c in self.pk)

    @property
    def insertable(self) -> tuple[str, ...]:
        """Columns a restore writes: all but generated ones (PostgreSQL computes those)."""
        return tuple(c for c in self.columns if c not in self.generated)

    @property
    def updatable(self) -> tuple[str, ...]:
        """Columns an UPDATE may set: not generated, not GENERATED ALWAYS identity."""
        return tuple(c for c in self.insertable if c not in self.identity_always)

    @property
    def overriding(self) -> str:
        return " OVERRIDING SYSTEM VALUE" if self.identity_always else ""


def format_key(pk: Any) -> str:
    """A logged primary key for people: the value alone for one column, else the JSON."""
    if isinstance(pk, dict) and len(pk) == 1:
        return str(next(iter(pk.values())))
    return json.dumps(pk, default=str)


def load_table(conn: Connection, oid: int) -> TableInfo:
    row = conn.execute(text(
        "SELECT n.nspname, c.relname, (SELECT conname FROM pg_constraint "
        "  WHERE conrelid = c.oid AND contype = 'p') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = :oid"
    ), {"oid": oid}).one()
    columns = conn.execute(text(
        "SELECT attname, attgenerated <> '', attidentity = 'a' FROM pg_attribute "
        "WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ), {"oid": oid}).all()
    return TableInfo(
        oid, row[0], row[1], tuple(catalog.primary_key(conn, oid)), row[2],
        tuple(c[0] for c in columns),
        frozenset(c[0] for c in columns if c[1]),
        frozenset(c[0] for c in columns if c[2]),
    )


def find_table(conn: Connection, table: TableName) -> TableInfo | None:
    oid = catalog.table_oid(conn, table)
    return load_table(conn, oid) if oid is not None else None


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
              doing: str, locks: Sequence[LockNeed] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` in its own transaction under ``lock_timeout``, retrying lock waits.

    Each batch is such a transaction, so row locks last one batch, and a crash
    between batches leaves every committed batch complete with its log rows.
    ``locks``: the tables the batch writes and how, looked at in ``pg_locks``
    before each attempt (``pg.locks``); without them only the short, escalating
    ``lock_timeout`` and the retries apply.
    """
    statements = [sql] if isinstance(sql, str) else sql

    def once(lock_timeout_ms: int) -> list[tuple[Any, ...]]:
        with transaction(conn):
            raw.execute(conn, f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            result = None
            for statement in statements:
                result = raw.execute(conn, statement)
            return [tuple(r) for r in result] if result is not None and \
                result.returns_rows else []

    try:
        rows, _ = with_lock_retries(once, settings, doing, conn=conn, needs=locks, hint=(
            "this batch changed nothing; run again when the blocking session is done (the "
            "repair resumes where it stopped)"))
    except DBAPIError as err:
        if is_lock_error(err):
            raise LockRetriesExhausted(
                f"{doing}: rows stayed locked by other sessions beyond lock_timeout="
                f"{settings.lock_timeout_ms}ms after {settings.retries + 1} attempts; this "
                "batch changed nothing. Run again when the blocking session is done (the "
                "repair resumes where it stopped)"
            ) from err
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
