"""How the ``ensure_*`` operations run, online and offline (``--sql``)."""

from __future__ import annotations

import logging

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from ..compat import owns_transaction
from ..errors import ConfigurationError
from ..settings import resolve
from . import plain as _plain  # noqa: F401  (create_table re-runnable on PostgreSQL)
from .executor import Outcome, emit_offline, run_online
from .fallback import run_plain
from .ops import (
    EnsureCheckConstraintOp,
    EnsureConstraintDroppedOp,
    EnsureConstraintRenamedOp,
    EnsureForeignKeyOp,
    EnsureNotNullOp,
    EnsureNullableOp,
    EnsureOp,
)
from .repair_hook import repair_hook

log = logging.getLogger("alembic_integrity")


def perform(operations: Operations, op: EnsureOp) -> Outcome:
    ctx = operations.get_context()
    if ctx.dialect.name != "postgresql":
        return run_plain(operations, op)
    settings = resolve(ctx.config, **op.settings)
    if ctx.as_sql:
        plan = op.plan(None)
        with ctx.autocommit_block():
            if op.repair and plan.steps:
                ctx.impl.static_output("-- repair=True cannot run offline: run "
                                       "'alembic-integrity repair --apply' before this script")
            emit_offline(lambda sql: _verbatim(ctx, sql), plan, settings)
        return Outcome(op.op_name, plan.action, plan.detail)
    plan = op.plan(operations.get_bind())
    outcome = Outcome(op.op_name, plan.action, plan.detail)
    log.info("%s: %s (%s)", op.label, "nothing to do" if plan.noop else plan.action, plan.detail)
    if plan.noop:
        return outcome
    _require_owned_transaction(ctx)
    hook = repair_hook(ctx, settings) if op.repair else None
    with ctx.autocommit_block():
        run_online(operations.get_bind(), plan, settings, outcome, hook)
    return outcome


def _verbatim(ctx: MigrationContext, sql: str) -> None:
    """Write a statement to the --sql output as is: ``op.execute`` would parse ``:name``
    as a bind and double ``%``, changing predicates and values."""
    ctx.impl.static_output(sql + ctx.impl.command_terminator)


def _require_owned_transaction(ctx: MigrationContext) -> None:
    """autocommit_block can only commit a transaction that Alembic itself began."""
    if not owns_transaction(ctx):
        raise ConfigurationError(
            "alembic_integrity operations commit between their steps, but the migration "
            "runs inside a transaction that env.py opened itself (connection.begin()); use "
            "'with context.begin_transaction():' in env.py as Alembic's template does"
        )


for _op_class in (EnsureCheckConstraintOp, EnsureNotNullOp, EnsureForeignKeyOp,
                  EnsureConstraintDroppedOp, EnsureNullableOp, EnsureConstraintRenamedOp):
    Operations.implementation_for(_op_class)(perform)
