"""Shared test helpers: an engine on a fresh database, and a way to run operations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event

import alembic_integrity  # noqa: F401  (registers the operations)
from alembic_integrity.pg import raw


@pytest.fixture
def engine(integrity_database_url: str) -> Iterator[Engine]:
    eng = create_engine(integrity_database_url)
    yield eng
    eng.dispose()


def run_ops(engine: Engine, fn: Callable[[Operations], Any]) -> Any:
    """Run ``fn(op)`` the way env.py does by default: one migration transaction."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        with ctx.begin_transaction():
            return fn(Operations(ctx))


class StatementLog:
    """Every statement the engine sends, to prove an operation sent no DDL."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def ddl(self) -> list[str]:
        """ALTERs of real tables (the scratch temp table used to normalise CHECKs excluded)."""
        return [s for s in self.statements
                if s.lstrip().upper().startswith("ALTER") and "pg_temp." not in s]

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)


@pytest.fixture
def statement_log(engine: Engine) -> Iterator[StatementLog]:
    log = StatementLog(engine)
    yield log
    log.close()


def sql(engine: Engine, statement: str) -> list[tuple]:
    with engine.begin() as conn:
        result = raw.execute(conn, statement)
        return [tuple(r) for r in result] if result.returns_rows else []


def constraint_row(engine: Engine, table_sql: str, name: str) -> tuple | None:
    rows = sql(
        engine,
        "SELECT oid, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
        f"WHERE conrelid = '{table_sql}'::regclass AND conname = '{name}'",
    )
    return rows[0] if rows else None
