"""``ensure_*`` on a database other than PostgreSQL: the plain Alembic operation.

Projects that also run on SQLite (tests, local development) keep one set of
revisions. The lock-safe path (``NOT VALID`` then ``VALIDATE``, timeouts,
retries) reads PostgreSQL's catalog and speaks its DDL, so elsewhere each
operation becomes what Alembic itself would run: in batch mode on SQLite
(which cannot ALTER a constraint in place), directly on other dialects. Online,
the inspector skips what is already in place, so a re-run changes nothing.
Offline on SQLite, batch mode would need the table's shape at that revision,
which a script cannot know: the operation is printed as a comment to run online.

SQLite has no ``ADD COLUMN IF NOT EXISTS`` / ``DROP COLUMN IF EXISTS``, which the
re-runnable revisions autogenerate writes: for SQLite only, Alembic's own
``add_column`` / ``drop_column`` implementations are wrapped (Alembic dispatches
implementations by dialect) to ask the inspector instead.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.operations import BatchOperations, Operations
from alembic.operations import ops as alembic_ops
from sqlalchemy import inspect
from sqlalchemy.schema import conv

from .executor import Outcome
from .ops import (
    EnsureCheckConstraintOp,
    EnsureConstraintDroppedOp,
    EnsureConstraintRenamedOp,
    EnsureForeignKeyOp,
    EnsureNotNullOp,
    EnsureNullableOp,
    EnsureOp,
)

log = logging.getLogger("alembic_integrity")


def run_plain(operations: Operations, op: EnsureOp) -> Outcome:
    """Run ``op`` as the plain Alembic operation for a non-PostgreSQL dialect."""
    ctx = operations.get_context()
    dialect = ctx.dialect.name
    log.info("%s on %s: plain Alembic operation (the lock-safe path is PostgreSQL-only)",
             op.label, dialect)
    if ctx.as_sql and dialect == "sqlite":
        operations.execute(f"-- {op.label}: SQLite needs batch mode, which needs the table's "
                           "shape; run this revision online")
        return Outcome(op.op_name, "skipped", "offline on sqlite")
    if not ctx.as_sql and _in_place(operations, op):
        return Outcome(op.op_name, "none", "already in place")
    type_ = (_constraint_type(operations, op) if isinstance(op, EnsureConstraintDroppedOp)
             else None)
    with _batch(operations, op, dialect) as batch:
        _apply(batch, op, type_)
    return Outcome(op.op_name, "plain", dialect)


@contextmanager
def _batch(operations: Operations, op: EnsureOp, dialect: str) -> Iterator[Any]:
    """SQLite: a batch block (the table is copied). Elsewhere: the operations themselves,
    bound to the table so the same calls work."""
    table = _table(op)
    if dialect == "sqlite" and not isinstance(op, EnsureConstraintRenamedOp):
        with operations.batch_alter_table(table.name, schema=table.schema) as batch:
            yield batch
    else:
        yield _Direct(operations, table.name, table.schema)


class _Direct:
    """The BatchOperations calls used here, sent straight to ``op`` for one table."""

    def __init__(self, operations: Operations, table: str, schema: str | None) -> None:
        self.operations, self.table, self.schema = operations, table, schema

    def create_check_constraint(self, name: str, condition: str) -> None:
        self.operations.create_check_constraint(name, self.table, condition,
                                                schema=self.schema)

    def create_foreign_key(self, name: str, referent: str, local: list[str],
                           remote: list[str], **kw: Any) -> None:
        self.operations.create_foreign_key(name, self.table, referent, local, remote,
                                           source_schema=self.schema, **kw)

    def alter_column(self, column: str, **kw: Any) -> None:
        self.operations.alter_column(self.table, column, schema=self.schema, **kw)

    def drop_constraint(self, name: str, type_: str | None = None) -> None:
        self.operations.drop_constraint(name, self.table, type_=type_, schema=self.schema)


def _apply(batch: BatchOperations | _Direct, op: EnsureOp, type_: str | None) -> None:
    """Names are final (``conv``, what ``op.f()`` gives): the MetaData's naming convention,
    which Alembic applies to the names of its plain operations, must not rename them."""
    if isinstance(op, EnsureCheckConstraintOp):
        batch.create_check_constraint(conv(op.rule.name), op.rule.condition)
    elif isinstance(op, EnsureForeignKeyOp):
        rule = op.rule
        batch.create_foreign_key(conv(rule.name), rule.referent.name, list(rule.columns),
                                 list(rule.referent_columns), referent_schema=rule.referent.schema,
                                 ondelete=rule.ondelete, onupdate=rule.onupdate,
                                 deferrable=rule.deferrable, initially=rule.initially,
                                 match=rule.match)
    elif isinstance(op, EnsureNotNullOp | EnsureNullableOp):
        column = op.rule.column if isinstance(op, EnsureNotNullOp) else op.column
        batch.alter_column(column, nullable=isinstance(op, EnsureNullableOp))
    elif isinstance(op, EnsureConstraintDroppedOp):
        batch.drop_constraint(conv(op.name), type_=type_)
    elif isinstance(op, EnsureConstraintRenamedOp):
        assert isinstance(batch, _Direct)
        batch.operations.execute(_rename_sql(batch.operations, op))


def _rename_sql(operations: Operations, op: EnsureConstraintRenamedOp) -> str:
    quote = operations.get_context().dialect.identifier_preparer.quote
    table = quote(op.table.name) if op.table.schema is None else (
        f"{quote(op.table.schema)}.{quote(op.table.name)}")
    return f"ALTER TABLE {table} RENAME CONSTRAINT {quote(op.old_name)} TO {quote(op.new_name)}"


def _in_place(operations: Operations, op: EnsureOp) -> bool:
    """What the inspector says is already done (names and nullability only)."""
    table = _table(op)
    insp = inspect(operations.get_bind())
    if not insp.has_table(table.name, schema=table.schema):
        return False
    if isinstance(op, EnsureNotNullOp | EnsureNullableOp):
        column = op.rule.column if isinstance(op, EnsureNotNullOp) else op.column
        nullable = {c["name"]: c["nullable"] for c in insp.get_columns(table.name, table.schema)}
        return column in nullable and nullable[column] is isinstance(op, EnsureNullableOp)
    names = _constraint_names(insp, table.name, table.schema)
    if isinstance(op, EnsureCheckConstraintOp | EnsureForeignKeyOp):
        return op.rule.name in names
    if isinstance(op, EnsureConstraintDroppedOp):
        return op.name not in names
    if isinstance(op, EnsureConstraintRenamedOp):
        if op.new_name in names and op.old_name not in names:
            return True
        if operations.get_context().dialect.name == "sqlite":
            log.info("%s: SQLite cannot rename a constraint; left as it is", op.label)
            return True
    return False


def _constraint_names(insp: Any, table: str, schema: str | None) -> dict[str, str]:
    """Constraint name -> Alembic's ``type_`` for it (MySQL needs it to drop one)."""
    found: dict[str, str] = {}
    for kind, read in (("check", insp.get_check_constraints),
                       ("foreignkey", insp.get_foreign_keys),
                       ("unique", insp.get_unique_constraints)):
        try:
            found.update({c["name"]: kind for c in read(table, schema) if c.get("name")})
        except NotImplementedError:  # a dialect that cannot reflect this kind
            continue
    return found


def _constraint_type(operations: Operations, op: EnsureConstraintDroppedOp) -> str | None:
    if operations.get_context().as_sql:
        return None
    insp = inspect(operations.get_bind())
    return _constraint_names(insp, op.table.name, op.table.schema).get(op.name)


def _table(op: EnsureOp) -> Any:
    rule = getattr(op, "rule", None)
    return rule.table if rule is not None else op.table  # type: ignore[attr-defined]


# --- SQLite: add_column(if_not_exists=True) / drop_column(if_exists=True) -------------

Implementation = Any


def _column_guard(op_class: type[Any], flag: str, wanted_present: bool) -> None:
    """Register, for SQLite only, Alembic's implementation of ``op_class`` behind a check:
    with ``flag`` set, the inspector decides, and the flag (which SQLite cannot parse)
    is dropped."""
    dispatcher = getattr(Operations, "_to_impl", None)
    if dispatcher is None:  # another Alembic layout: leave SQLite to Alembic
        return
    original: Implementation = dispatcher.dispatch(op_class)

    def guarded(operations: Operations, operation: Any) -> Any:
        if not getattr(operation, flag, None):
            return original(operations, operation)
        ctx = operations.get_context()
        if not ctx.as_sql:
            name = (operation.column.name if op_class is alembic_ops.AddColumnOp
                    else operation.column_name)
            insp = inspect(operations.get_bind())
            present = insp.has_table(operation.table_name, schema=operation.schema) and any(
                c["name"] == name for c in insp.get_columns(operation.table_name,
                                                            schema=operation.schema))
            if present == wanted_present:
                log.info("%s %s.%s on sqlite: already done", op_class.__name__,
                         operation.table_name, name)
                return None
        operation = copy.copy(operation)
        setattr(operation, flag, None)
        return original(operations, operation)

    dispatcher.dispatch_for(op_class, qualifier="sqlite", replace=True)(guarded)


_column_guard(alembic_ops.AddColumnOp, "if_not_exists", wanted_present=True)
_column_guard(alembic_ops.DropColumnOp, "if_exists", wanted_present=False)
