"""Alembic's own ``create_table(if_not_exists=True)`` made truly re-runnable on PostgreSQL.

Autogenerate writes ``if_not_exists=True`` so that a revision run again after a
re-stamp changes nothing (what ``verify`` checks). Alembic's ``create_table``
first fires the table's ``before_create`` events without checking, so a native
ENUM type is created again and the re-run fails before ``CREATE TABLE IF NOT
EXISTS`` is reached. Online, when the table already exists, there is nothing to
create: the operation is skipped whole, types and all. Every other case (a new
table, offline ``--sql``, no ``if_not_exists``) is Alembic's implementation.
Alembic dispatches implementations by dialect; this one is for PostgreSQL only.
"""

from __future__ import annotations

import logging
from typing import Any

from alembic.operations import Operations
from alembic.operations import ops as alembic_ops
from sqlalchemy import inspect

log = logging.getLogger("alembic_integrity")


def _install() -> None:
    dispatcher = getattr(Operations, "_to_impl", None)
    if dispatcher is None:  # another Alembic layout: leave it to Alembic
        return
    original: Any = dispatcher.dispatch(alembic_ops.CreateTableOp)

    def create_table(operations: Operations, operation: alembic_ops.CreateTableOp) -> Any:
        ctx = operations.get_context()
        if operation.if_not_exists and not ctx.as_sql and inspect(
                operations.get_bind()).has_table(operation.table_name, schema=operation.schema):
            log.info("create_table %s: exists already (if_not_exists), nothing to create",
                     operation.table_name)
            return operation.to_table(ctx)
        return original(operations, operation)

    dispatcher.dispatch_for(alembic_ops.CreateTableOp, qualifier="postgresql",
                            replace=True)(create_table)


_install()
