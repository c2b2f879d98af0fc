"""Each ensure_* operation from each starting state, on a real server."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from alembic_integrity.errors import ConfigurationError, PredicateError
from conftest import StatementLog, constraint_row, run_ops, sql

TABLE = '"Sales"."Order"'


@pytest.fixture
def sales(engine: Engine) -> Engine:
    """A mixed-case table named with a reserved word, in a mixed-case schema."""
    sql(engine, """
        CREATE SCHEMA "Sales";
        CREATE TABLE "Sales".customer (id bigint PRIMARY KEY);
        CREATE TABLE "Sales"."Order" (
            id bigint PRIMARY KEY, qty integer, "select" text, "Customer" bigint);
        INSERT INTO "Sales".customer SELECT g FROM generate_series(1, 10) g;
        INSERT INTO "Sales"."Order" SELECT g, g, 'x', 1 + g % 10 FROM generate_series(1, 500) g;
    """)
    return engine


def check(op, condition: str = "qty > 0", name: str = "ck_order_qty", **kw):
    return op.ensure_check_constraint(name, "Order", condition, schema="Sales", **kw)


def fk(op, ondelete: str | None = None):
    return op.ensure_foreign_key("fk_order_customer", "Order", "customer", ["Customer"], ["id"],
                                 ondelete=ondelete, schema="Sales", referent_schema="Sales")


# --- ensure_check_constraint -------------------------------------------------------------

def test_check_absent_is_added_and_valid(sales: Engine) -> None:
    outcome = run_ops(sales, check)
    assert outcome.action == "add"
    _, valid, definition = constraint_row(sales, TABLE, "ck_order_qty")
    assert valid and definition == "CHECK ((qty > 0))"


def test_check_same_and_valid_sends_no_ddl(sales: Engine, statement_log: StatementLog) -> None:
    run_ops(sales, check)
    before = constraint_row(sales, TABLE, "ck_order_qty")
    statement_log.statements.clear()
    # Written differently, normalised identically by PostgreSQL.
    outcome = run_ops(sales, lambda op: check(op, "(QTY>0)"))
    assert outcome.action == "none"
    assert statement_log.ddl() == []
    assert constraint_row(sales, TABLE, "ck_order_qty") == before


def test_check_not_valid_is_only_validated(sales: Engine, statement_log: StatementLog) -> None:
    sql(sales, f"ALTER TABLE {TABLE} ADD CONSTRAINT ck_order_qty CHECK (qty > 0) NOT VALID")
    oid_before = constraint_row(sales, TABLE, "ck_order_qty")[0]
    statement_log.statements.clear()
    outcome = run_ops(sales, check)
    assert outcome.action == "validate"
    assert statement_log.ddl() == [f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT ck_order_qty"]
    oid, valid, _ = constraint_row(sales, TABLE, "ck_order_qty")
    assert valid and oid == oid_before


def test_check_other_definition_is_replaced(sales: Engine) -> None:
    """Scenario 3: a constraint of the same name, patched by hand with an older predicate."""
    sql(sales, f"ALTER TABLE {TABLE} ADD CONSTRAINT ck_order_qty CHECK (qty >= 0)")
    outcome = run_ops(sales, check)
    assert outcome.action == "replace"
    _, valid, definition = constraint_row(sales, TABLE, "ck_order_qty")
    assert valid and definition == "CHECK ((qty > 0))"


def test_check_with_percent_colon_and_quotes(sales: Engine) -> None:
    cond = """"select" LIKE 'x%' OR "select" = 'a:b' OR "select" IS NULL"""
    assert run_ops(sales, lambda op: check(op, cond, name="ck_order_select")).action == "add"
    assert run_ops(sales, lambda op: check(op, cond, name="ck_order_select")).action == "none"


def test_check_predicate_that_does_not_parse(sales: Engine) -> None:
    with pytest.raises(PredicateError, match=r"ck_order_qty.*rejects the predicate"):
        run_ops(sales, lambda op: check(op, "qty >>> 0"))
    assert constraint_row(sales, TABLE, "ck_order_qty") is None


def test_missing_table_is_one_clear_error(engine: Engine) -> None:
    with pytest.raises(Exception, match=r"table Sales\.Nope does not exist"):
        run_ops(engine, lambda op: op.ensure_check_constraint("ck", "Nope", "1 = 1", "Sales"))


def test_63_byte_name_works_and_64_is_refused(sales: Engine) -> None:
    name63 = "ck_" + "é" * 30  # 3 + 60 bytes
    assert len(name63.encode()) == 63
    assert run_ops(sales, lambda op: check(op, name=name63)).action == "add"
    assert run_ops(sales, lambda op: check(op, name=name63)).action == "none"
    with pytest.raises(ConfigurationError, match="64 bytes"):
        run_ops(sales, lambda op: check(op, name=name63 + "x"))


# --- ensure_foreign_key ------------------------------------------------------------------

def test_fk_states(sales: Engine, statement_log: StatementLog) -> None:
    assert run_ops(sales, fk).action == "add"
    oid, valid, definition = constraint_row(sales, TABLE, "fk_order_customer")
    assert valid and definition == 'FOREIGN KEY ("Customer") REFERENCES "Sales".customer(id)'

    statement_log.statements.clear()
    assert run_ops(sales, fk).action == "none"
    assert statement_log.ddl() == []
    assert constraint_row(sales, TABLE, "fk_order_customer")[0] == oid

    assert run_ops(sales, lambda op: fk(op, "CASCADE")).action == "replace"
    _, valid, definition = constraint_row(sales, TABLE, "fk_order_customer")
    assert valid and definition.endswith("ON DELETE CASCADE")


def test_fk_not_valid_is_only_validated(sales: Engine) -> None:
    sql(sales, f'ALTER TABLE {TABLE} ADD CONSTRAINT fk_order_customer FOREIGN KEY ("Customer") '
               'REFERENCES "Sales".customer (id) NOT VALID')
    oid = constraint_row(sales, TABLE, "fk_order_customer")[0]
    assert run_ops(sales, fk).action == "validate"
    assert constraint_row(sales, TABLE, "fk_order_customer")[:2] == (oid, True)


# --- ensure_not_null / ensure_nullable / ensure_constraint_dropped -----------------------

def not_null_of(engine: Engine, column: str) -> bool:
    return sql(engine, f"SELECT attnotnull FROM pg_attribute WHERE attrelid = '{TABLE}'::regclass "
                       f"AND attname = '{column}'")[0][0]


def test_not_null_states(sales: Engine, statement_log: StatementLog) -> None:
    outcome = run_ops(sales, lambda op: op.ensure_not_null("Order", "select", schema="Sales"))
    assert outcome.action == "set-not-null"
    assert not_null_of(sales, "select")
    leftovers = sql(sales, "SELECT conname FROM pg_constraint "
                           f"WHERE conrelid = '{TABLE}'::regclass AND contype = 'c'")
    assert leftovers == []

    statement_log.statements.clear()
    again = run_ops(sales, lambda op: op.ensure_not_null("Order", "select", schema="Sales"))
    assert again.action == "none" and statement_log.ddl() == []

    def nullable(op):
        return op.ensure_nullable("Order", "select", "Sales")

    assert run_ops(sales, nullable).action == "drop-not-null"
    assert not not_null_of(sales, "select")
    assert run_ops(sales, nullable).action == "none"


def test_not_null_resumes_from_a_not_valid_helper(sales: Engine) -> None:
    """A previous run that failed at VALIDATE left the helper check NOT VALID.

    Its name is the one earlier releases used (PostgreSQL 18's own NOT NULL name).
    """
    sql(sales, f'ALTER TABLE {TABLE} ADD CONSTRAINT "Order_qty_not_null" CHECK (qty IS NOT NULL) '
               "NOT VALID")
    outcome = run_ops(sales, lambda op: op.ensure_not_null("Order", "qty", schema="Sales"))
    assert outcome.detail == "helper check Order_qty_not_null NOT VALID"
    assert not_null_of(sales, "qty")
    leftovers = sql(sales, "SELECT conname FROM pg_constraint "
                           f"WHERE conrelid = '{TABLE}'::regclass AND contype = 'c'")
    assert leftovers == []


def test_not_null_missing_column(sales: Engine) -> None:
    with pytest.raises(Exception, match="has no column 'nope'"):
        run_ops(sales, lambda op: op.ensure_not_null("Order", "nope", schema="Sales"))


def test_constraint_dropped_states(sales: Engine) -> None:
    run_ops(sales, check)
    assert run_ops(sales, lambda op: op.ensure_constraint_dropped(
        "ck_order_qty", "Order", "Sales")).action == "drop"
    assert constraint_row(sales, TABLE, "ck_order_qty") is None
    assert run_ops(sales, lambda op: op.ensure_constraint_dropped(
        "ck_order_qty", "Order", "Sales")).action == "none"
