"""Run a plan: each step in a transaction of its own, under a timeout, with retries.

Online, steps run on the migration's connection inside Alembic's
``autocommit_block`` (the migration's open transaction is committed first),
with explicit ``BEGIN``/``COMMIT`` so that a ``SET LOCAL`` timeout covers
exactly one step. Offline (``--sql``) the same statements are printed with
the same boundaries; retries cannot be expressed in a script.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..audit.violations import validation_failure
from ..errors import IntegrityError, ValidationFailed, sqlstate
from ..pg import raw
from ..pg.locks import with_lock_retries
from ..settings import Settings
from . import partitions
from .ddl_plan import Plan, Step

log = logging.getLogger("alembic_integrity")

QUERY_CANCELED = "57014"
VIOLATIONS = {"23514", "23503", "23502"}

Hook = Callable[[Connection, Step], None]


@dataclass
class Outcome:
    """What an operation did; returned by ``op.ensure_*`` for tests and reports."""

    operation: str
    action: str
    detail: str
    statements: list[str] = field(default_factory=list)
    attempts: int = 0


def step_preamble(step: Step, settings: Settings, lock_timeout_ms: int | None = None
                  ) -> list[str]:
    """The step's timeouts; online, ``lock_timeout_ms`` is the attempt's (escalated) one."""
    timeout = (settings.validate_statement_timeout_ms if step.kind == "validate"
               else settings.ddl_statement_timeout_ms)
    lock_timeout = settings.lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    return [f"SET LOCAL lock_timeout = '{lock_timeout}ms'",
            f"SET LOCAL statement_timeout = '{timeout}ms'"]


def emit_offline(execute: Callable[[str], None], plan: Plan, settings: Settings) -> None:
    """A script can neither look at pg_locks nor retry: each step gets the one
    ``lock_timeout`` it may ever use, the escalation's ceiling (``lock_timeout_max``)."""
    single_shot = max(settings.lock_timeout_max_ms, settings.lock_timeout_ms)
    for step in plan.steps:
        execute("BEGIN")
        for sql in [*step_preamble(step, settings, single_shot), *step.statements]:
            execute(sql)
        execute("COMMIT")


def run_online(conn: Connection, plan: Plan, settings: Settings, outcome: Outcome,
               before_validate: Hook | None = None) -> None:
    """Run each step on an AUTOCOMMIT connection; see the module docstring.

    A VALIDATE on a partitioned table runs one partition at a time (see
    ``partitions``); the repair hook runs once before it, for the whole table.
    """
    for step in plan.steps:
        if step.kind == "validate" and before_validate is not None:
            before_validate(conn, step)
        for part in partitions.split_validate(conn, step):
            if isinstance(part, partitions.PartitionStep):
                log.info("  %s: scanning", part.purpose)
            try:
                outcome.attempts += _run_step(conn, part, settings)
            except ValidationFailed as err:
                if isinstance(part, partitions.PartitionStep):
                    raise partitions.resumable(err, part) from err
                raise
            outcome.statements.extend(part.statements)
            log.info("  %s: done", part.purpose)


def _run_step(conn: Connection, step: Step, settings: Settings) -> int:
    """Look in pg_locks before each attempt (see ``pg.locks``): never queue behind a long lock."""
    try:
        _, tries = with_lock_retries(
            lambda lock_timeout: _execute_transaction(conn, step, settings, lock_timeout),
            settings, step.purpose, conn=conn, needs=step.locks,
            hint="then run the upgrade again")
    except DBAPIError as err:
        code = sqlstate(err)
        raise _translate(conn, err, code, step, settings) from err
    return tries


def _execute_transaction(conn: Connection, step: Step, settings: Settings,
                         lock_timeout_ms: int) -> None:
    raw.execute(conn, "BEGIN")
    try:
        for sql in [*step_preamble(step, settings, lock_timeout_ms), *step.statements]:
            raw.execute(conn, sql)
        raw.execute(conn, "COMMIT")
    except BaseException:
        raw.execute(conn, "ROLLBACK")
        raise


def _translate(conn: Connection, err: DBAPIError, code: str | None, step: Step,
               settings: Settings) -> IntegrityError | DBAPIError:
    if step.kind == "validate" and code in VIOLATIONS and step.rule is not None:
        return validation_failure(conn, step.rule)
    if step.kind == "validate" and code == QUERY_CANCELED:
        return IntegrityError(
            f"{step.purpose}: VALIDATE exceeded validate_statement_timeout="
            f"{settings.validate_statement_timeout_ms}ms; the constraint stays NOT VALID. "
            "Raise the timeout (0 = none) and run the upgrade again"
        )
    if code == QUERY_CANCELED:
        return IntegrityError(
            f"{step.purpose}: exceeded ddl_statement_timeout={settings.ddl_statement_timeout_ms}ms "
            "and was rolled back; this step should be instant, so check what it waited for "
            "(pg_stat_activity) before raising the timeout"
        )
    return err
