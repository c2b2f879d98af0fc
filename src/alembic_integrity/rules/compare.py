"""A declared rule compared with what the catalog has: same CHECK, same foreign key.

"Same" is decided by PostgreSQL's own normalisation, never by the text as typed.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import PredicateError, first_line, sqlstate
from ..pg import raw
from ..pg.catalog import UNDEFINED_COLUMN, ConstraintState, foreign_key_state, table_oid
from .kinds import CheckRule, ForeignKeyRule


def same_foreign_key(conn: Connection, state: ConstraintState, rule: ForeignKeyRule) -> bool:
    if state.contype != "f":
        return False
    live = foreign_key_state(conn, state.oid)
    referent = table_oid(conn, rule.referent)
    return (
        live.columns == tuple(rule.columns)
        and live.referent_oid == referent
        and live.referent_columns == tuple(rule.referent_columns)
        and live.ondelete == rule.ondelete_code
        and live.onupdate == rule.onupdate_code
        and live.match == "s"
    )


def normalized_check(conn: Connection, rule: CheckRule) -> str:
    """The definition PostgreSQL would store for ``rule``, built on a scratch temp table.

    Runs inside a savepoint that is always rolled back, so nothing is left
    behind and any lock taken on the source table is released at once.
    """
    scratch = "alembic_integrity_scratch"
    savepoint = conn.begin_nested()
    try:
        raw.execute(conn, "SET LOCAL lock_timeout = '2s'")
        raw.execute(conn, f"CREATE TEMPORARY TABLE {scratch} (LIKE {rule.table.sql})")
        raw.execute(conn,
            f"ALTER TABLE pg_temp.{scratch} ADD CONSTRAINT probe CHECK ({rule.condition})"
        )
        return str(raw.execute(conn,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE conrelid = 'pg_temp.{scratch}'::regclass AND conname = 'probe'"
        ).scalar_one())
    except DBAPIError as err:
        hint = ("; if a pending revision adds that column, this rule can only be checked "
                "after it (use repair=True on its ensure_* operation), else fix the condition"
                if sqlstate(err) == UNDEFINED_COLUMN else "; fix the condition text")
        raise PredicateError(
            f"CHECK constraint {rule.name} on {rule.table}: PostgreSQL rejects the predicate "
            f"{rule.condition!r}: {first_line(err)}{hint}"
        ) from err
    finally:
        savepoint.rollback()
