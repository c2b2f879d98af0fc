"""Literal SQL reaches PostgreSQL and the --sql output verbatim: no doubled %, no bound :name."""

from __future__ import annotations

import io

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from alembic_integrity.pg import raw
from conftest import sql

PREDICATE = "note IS NULL OR note LIKE '50% off%' OR note <> ' :b' OR note = 'x::text'"


def offline(fn) -> str:
    buffer = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql",
                                     opts={"as_sql": True, "output_buffer": buffer})
    fn(Operations(ctx))
    return buffer.getvalue()


def test_offline_sql_keeps_percent_and_colon_as_written() -> None:
    out = offline(lambda op: op.ensure_check_constraint("ck_t_note", "t", PREDICATE))
    assert f"CHECK ({PREDICATE}) NOT VALID;" in out
    assert "%%" not in out and "NULL OR note <> NULL" not in out


def test_raw_execute_sends_percent_and_colon_verbatim(engine: Engine) -> None:
    with engine.begin() as conn:
        value = raw.execute(conn, "SELECT '50% off: now' || ' :b %s %(x)s'").scalar_one()
    assert value == "50% off: now :b %s %(x)s"


def test_online_check_with_percent_and_colon_is_stored_as_written(engine: Engine) -> None:
    sql(engine, "CREATE TABLE t (id int PRIMARY KEY, note text)")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        with ctx.begin_transaction():
            Operations(ctx).ensure_check_constraint("ck_t_note", "t", PREDICATE)
    [(definition,)] = sql(engine, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                  "WHERE conname = 'ck_t_note'")
    assert "'50% off%'" in definition and "' :b'" in definition


def test_names_with_percent_work_through_every_path(engine: Engine) -> None:
    """Quoting never doubles ``%``: the name reaches PostgreSQL as written."""
    sql(engine, 'CREATE SCHEMA "50% off"; '
                'CREATE TABLE "50% off"."t%s" (id int PRIMARY KEY, note text)')
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        with ctx.begin_transaction():
            op = Operations(ctx)
            op.ensure_check_constraint("ck_pct%", "t%s", PREDICATE, schema="50% off")
            op.ensure_not_null("t%s", "note", schema="50% off")
    rows = sql(engine, "SELECT conname FROM pg_constraint WHERE conrelid = "
                       "'\"50% off\".\"t%s\"'::regclass AND contype = 'c'")
    assert ("ck_pct%",) in rows
