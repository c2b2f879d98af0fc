"""A declared rule compared with what the catalog has: same CHECK, same foreign key.

"Same" is decided by PostgreSQL's own normalisation, never by the text as typed.
"""

from __future__ import annotations

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import PredicateError, first_line, sqlstate
from ..pg import raw
from ..pg.catalog import (
    UNDEFINED_COLUMN,
    ConstraintState,
    constraints_of,
    foreign_key_state,
    foreign_key_timing,
    table_oid,
)
from ..pg.catalog import constraint as catalog_constraint
from .kinds import CheckRule, ForeignKeyRule


def same_foreign_key(conn: Connection, state: ConstraintState, rule: ForeignKeyRule,
                     loose: bool = False) -> bool:
    """Same columns, referent, actions, MATCH type, DEFERRABLE and INITIALLY.

    ``loose``: only the columns and the referent, i.e. "the same foreign key,
    perhaps with other semantics" (to report it as another definition).
    """
    if state.contype != "f":
        return False
    live = foreign_key_state(conn, state.oid)
    referent = table_oid(conn, rule.referent)
    if not (live.columns == tuple(rule.columns) and live.referent_oid == referent
            and live.referent_columns == tuple(rule.referent_columns)):
        return False
    if loose:
        return True
    deferrable, deferred = foreign_key_timing(conn, state.oid)
    return (
        live.ondelete == rule.ondelete_code
        and live.onupdate == rule.onupdate_code
        and live.match == rule.match_code
        and deferrable == rule.is_deferrable
        and deferred == rule.is_deferred
    )


def find_foreign_key(conn: Connection, oid: int, rule: ForeignKeyRule, loose: bool = False,
                     taken: frozenset[str] = frozenset()) -> ConstraintState | None:
    """A live FOREIGN KEY on the table with the rule's structure, whatever its name.

    The one named like the rule wins; ``taken`` names are never returned (a
    constraint another rule already claimed).
    """
    found = [c for c in constraints_of(conn, oid, "f")
             if c.name not in taken and same_foreign_key(conn, c, rule, loose)]
    return next((c for c in found if c.name == rule.name), found[0] if found else None)


def find_check(conn: Connection, oid: int, rule: CheckRule,
               taken: frozenset[str] = frozenset()) -> ConstraintState | None:
    """A live CHECK on the table with the rule's normalised definition, whatever its name."""
    wanted = normalized_check(conn, rule)
    found = [c for c in constraints_of(conn, oid, "c")
             if c.name not in taken and c.definition == wanted]
    return next((c for c in found if c.name == rule.name), found[0] if found else None)


def live_constraint(conn: Connection, oid: int, rule: CheckRule | ForeignKeyRule
                    ) -> ConstraintState | None:
    """The live constraint that stands for ``rule``: by name when the models name it,
    else by structure (FOREIGN KEY) or normalised definition (CHECK). For an
    unnamed FOREIGN KEY whose semantics changed, the one on the same columns
    and referent (its definition then differs)."""
    if rule.named:
        return catalog_constraint(conn, oid, rule.name)
    if isinstance(rule, ForeignKeyRule):
        return find_foreign_key(conn, oid, rule) or find_foreign_key(conn, oid, rule, loose=True)
    return find_check(conn, oid, rule)


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
