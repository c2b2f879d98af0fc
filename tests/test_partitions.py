"""ensure_* on a partitioned table: 12 leaf partitions, two levels, two schemas, mixed case.

Every major behaves the same from the outside; inside, PostgreSQL before 18 takes
foreign keys partition by partition (it refuses NOT VALID on a partitioned table).
Evidence that the parent's own step reads no row is timing-free: a CHECK predicate
that raises a NOTICE per row it evaluates, PostgreSQL's DEBUG1 "verifying table"
lines, and an orphan row planted in an already-validated partition that a re-scan
would reject.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from alembic.operations import Operations
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Engine,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Table,
    Text,
    event,
)

from alembic_integrity.audit.core import audit
from alembic_integrity.errors import LockRetriesExhausted, ValidationFailed
from alembic_integrity.pg import catalog
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.rules.metadata import rules_from_metadata
from conftest import StatementLog, run_ops, sql

PARENT = '"Sales"."Events"'
# Leaves in the toolkit's order (path of schema-qualified names from the root).
LEAVES = [f'"Archive"."Events_{i:02d}"' for i in (1, 2, 3)] + [
    f'"Sales"."Events_{i:02d}"' for i in range(4, 11)] + [
    '"Archive"."Events_12"', '"Sales"."Events_11"']  # under "Sales"."Events_Late"
MIDDLE = '"Sales"."Events_Late"'
ROWS_PER_LEAF = 20


def bounds(i: int) -> str:
    return f"FROM ({i * 100}) TO ({i * 100 + 100})"


@pytest.fixture
def events(engine: Engine) -> Engine:
    statements = [
        'CREATE SCHEMA "Sales"', 'CREATE SCHEMA "Archive"',
        'CREATE TABLE "Sales".customer (id bigint PRIMARY KEY)',
        'INSERT INTO "Sales".customer SELECT g FROM generate_series(1, 10) g',
        f'CREATE TABLE {PARENT} (id bigint, k integer, qty integer, "Note" text, '
        '"Customer" bigint, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)',
        f'CREATE TABLE {MIDDLE} PARTITION OF {PARENT} FOR VALUES FROM (1100) TO (1300) '
        "PARTITION BY RANGE (k)",
        f'CREATE TABLE "Sales"."Events_11" PARTITION OF {MIDDLE} FOR VALUES {bounds(11)}',
        f'CREATE TABLE "Archive"."Events_12" PARTITION OF {MIDDLE} FOR VALUES {bounds(12)}',
    ]
    for leaf in LEAVES[:10]:
        number = int(leaf[-3:-1])
        statements.append(f"CREATE TABLE {leaf} PARTITION OF {PARENT} FOR VALUES {bounds(number)}")
    statements.append(
        f"INSERT INTO {PARENT} SELECT g, 100 * (1 + g % 12) + g % 100, 1 + g % 7, 'n', "
        f"1 + g % 10 FROM generate_series(1, {12 * ROWS_PER_LEAF}) g")
    sql(engine, ";\n".join(statements))
    return engine


def check(op: Operations, condition: str = "qty > 0") -> Any:
    return op.ensure_check_constraint("ck_events_qty", "Events", condition, schema="Sales")


def not_null(op: Operations) -> Any:
    return op.ensure_not_null("Events", "Note", schema="Sales")


def fk(op: Operations) -> Any:
    return op.ensure_foreign_key("fk_events_customer", "Events", "customer", ["Customer"],
                                 ["id"], schema="Sales", referent_schema="Sales")


def all_three(op: Operations) -> list[Any]:
    return [check(op), not_null(op), fk(op)]


def tree_constraints(engine: Engine) -> dict[tuple[str, str], tuple[int, bool, int]]:
    """(relation, constraint) -> (oid, validated, conparentid) for the whole tree."""
    rows = sql(engine, f"""
        SELECT c.conrelid::regclass::text, c.conname, c.oid::int, c.convalidated,
               c.conparentid::int
        FROM pg_constraint c JOIN pg_partition_tree('{PARENT}') t ON t.relid = c.conrelid
        WHERE c.contype IN ('c', 'f', 'n')""")
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def tree(engine: Engine) -> list[str]:
    return [r[0] for r in sql(engine, f"SELECT relid::regclass::text FROM "
                                      f"pg_partition_tree('{PARENT}')")]


def fk_of(engine: Engine, relation: str) -> tuple[int, bool, int]:
    """The foreign key on ``relation`` that points to "Sales".customer, whatever its name."""
    return tuple(sql(engine, f"""
        SELECT oid::int, convalidated, conparentid::int FROM pg_constraint
        WHERE conrelid = '{relation}'::regclass AND contype = 'f'""")[0])  # type: ignore[return-value]


def validates_of(log: StatementLog, name: str) -> list[str]:
    """The relations VALIDATE CONSTRAINT ``name`` was sent for, in order."""
    return [s.split("ALTER TABLE ", 1)[1].split(" VALIDATE", 1)[0]
            for s in log.statements if f"VALIDATE CONSTRAINT {name}" in s]


# --- the three operations on 12 partitions --------------------------------------------------


def test_all_three_on_twelve_partitions(events: Engine, statement_log: StatementLog) -> None:
    outcomes = run_ops(events, all_three)
    assert [o.action for o in outcomes] == ["add", "set-not-null", "add"]

    relations = tree(events)
    assert len(relations) == 14  # parent, one sub-partitioned partition, 12 leaves
    state = tree_constraints(events)
    for relation in relations:
        assert state[(relation, "ck_events_qty")][1] is True, relation
        assert fk_of(events, relation)[1] is True, relation
        assert sql(events, f"""SELECT attnotnull FROM pg_attribute WHERE attrelid =
                   '{relation}'::regclass AND attname = 'Note'""") == [(True,)], relation
    assert sql(events, f"""SELECT count(*) FROM pg_constraint c
               JOIN pg_partition_tree('{PARENT}') t ON t.relid = c.conrelid
               WHERE c.contype = 'c' AND c.conname LIKE '%not_null'""") == [(0,)]  # no helper
    parent_fk = fk_of(events, PARENT)[0]
    for leaf in LEAVES:  # each leaf's key hangs under the parent's (one or two levels)
        assert fk_of(events, leaf)[2] in {parent_fk, fk_of(events, MIDDLE)[0]}, leaf

    # Each rule was validated leaf by leaf, in order, then (where it has one) on the parent.
    assert validates_of(statement_log, "ck_events_qty") == [*LEAVES, PARENT]
    assert validates_of(statement_log, "fk_events_customer")[:12] == LEAVES


def test_rerun_changes_nothing(events: Engine, statement_log: StatementLog) -> None:
    run_ops(events, all_three)
    before = tree_constraints(events)
    statement_log.statements.clear()
    assert [o.action for o in run_ops(events, all_three)] == ["none", "none", "none"]
    assert statement_log.ddl() == []
    assert tree_constraints(events) == before


# --- failure in partition k, fix, re-run: resumes there -----------------------------------


def test_check_failure_in_partition_7_resumes_there(
        events: Engine, statement_log: StatementLog, caplog: pytest.LogCaptureFixture) -> None:
    bad = LEAVES[6]
    sql(events, f"UPDATE {bad} SET qty = -1 WHERE id = (SELECT min(id) FROM {bad})")
    with caplog.at_level(logging.INFO, "alembic_integrity"), \
            pytest.raises(ValidationFailed, match=r"partition 7 of 12") as failed:
        run_ops(events, check)
    assert failed.value.table == bad.replace('"', "") and failed.value.count == 1
    assert "partition 6/12" in caplog.text and "partition 7/12" in caplog.text
    state = tree_constraints(events)
    validated = {rel for (rel, name), (_, ok, _) in state.items() if name == "ck_events_qty" and ok}
    oids = {rel: oid for (rel, name), (oid, _, _) in state.items() if name == "ck_events_qty"}
    assert len(validated) == 6  # the 6 leaves before the bad one

    sql(events, f"UPDATE {bad} SET qty = 1 WHERE qty = -1")
    statement_log.statements.clear()
    assert run_ops(events, check).action == "validate"
    assert validates_of(statement_log, "ck_events_qty") == [*LEAVES[6:], PARENT]
    after = tree_constraints(events)
    assert {rel: oid for (rel, name), (oid, _, _) in after.items()
            if name == "ck_events_qty"} == oids
    assert all(ok for (_, name), (_, ok, _) in after.items() if name == "ck_events_qty")


def test_fk_failure_then_resume_never_rereads_a_valid_partition(
        events: Engine, statement_log: StatementLog) -> None:
    """An orphan slipped (triggers off) into partition 1 after it was validated is never
    seen again: neither the resumed run nor the parent's own step re-reads partition 1.
    On 15-17 that step is ADD FOREIGN KEY on the parent, which adopts the partitions' keys."""
    sql(events, f'UPDATE {LEAVES[4]} SET "Customer" = 99 WHERE id = '
                f"(SELECT min(id) FROM {LEAVES[4]})")
    with pytest.raises(ValidationFailed, match=r"partition 5 of 12"):
        run_ops(events, fk)
    leaf_keys = {leaf: fk_of(events, leaf) for leaf in LEAVES}
    assert [leaf_keys[leaf][1] for leaf in LEAVES] == [True] * 4 + [False] * 8

    sql(events, "SET session_replication_role = replica; "
                f'UPDATE {LEAVES[0]} SET "Customer" = 77 WHERE id = (SELECT min(id) FROM '
                f"{LEAVES[0]}); SET session_replication_role = DEFAULT")
    sql(events, f'UPDATE {LEAVES[4]} SET "Customer" = 1 WHERE "Customer" = 99')
    statement_log.statements.clear()
    run_ops(events, fk)

    assert validates_of(statement_log, "fk_events_customer")[:8] == LEAVES[4:]
    parent_fk = fk_of(events, PARENT)
    assert parent_fk[1]
    for leaf in LEAVES:
        oid, valid, parent = fk_of(events, leaf)
        assert (oid, valid) == (leaf_keys[leaf][0], True), leaf  # same key, adopted
        assert parent != 0, leaf
    assert sql(events, f'SELECT count(*) FROM {LEAVES[0]} WHERE "Customer" = 77') == [(1,)]


# --- the parent's own step reads no row -----------------------------------------------------


class Notices:
    """Server messages (NOTICE and, with debug on, DEBUG1) per statement sent."""

    def __init__(self, engine: Engine) -> None:
        self.by_statement: list[tuple[str, str]] = []
        self.current = ""
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._statement)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.current = statement

    def attach(self, op: Operations) -> None:
        driver = op.get_bind().connection.driver_connection
        assert driver is not None
        driver.add_notice_handler(
            lambda d: self.by_statement.append((self.current, d.message_primary or "")))
        op.get_bind().exec_driver_sql("SET client_min_messages = debug1")

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)


@pytest.fixture
def notices(events: Engine) -> Iterator[Notices]:
    n = Notices(events)
    yield n
    n.close()


def test_no_step_on_the_parent_reads_rows(events: Engine, notices: Notices) -> None:
    sql(events, """CREATE FUNCTION "Sales".counted(q integer) RETURNS boolean IMMUTABLE
                   LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'row read'; RETURN q > 0; END $$""")

    def run(op: Operations) -> list[Any]:
        notices.attach(op)
        return [check(op, '"Sales".counted(qty)'), not_null(op), fk(op)]

    run_ops(events, run)
    on_leaf: Callable[[str], bool] = lambda s: any(  # noqa: E731
        f"ALTER TABLE {leaf} VALIDATE" in s for leaf in LEAVES)
    reads = [(s, m) for s, m in notices.by_statement  # (the scratch table normalises the CHECK)
             if (m == "row read" or m.startswith("verifying table")) and "pg_temp." not in s]
    assert reads, "the per-partition VALIDATEs should have been seen reading rows"
    assert [(s, m) for s, m in reads if not on_leaf(s)] == []
    rows_read = sum(1 for s, m in reads if m == "row read")
    assert rows_read == 12 * ROWS_PER_LEAF  # each row once, by its own partition's VALIDATE


# --- another definition on the parent: replaced on the whole tree ------------------------


def test_other_definitions_are_replaced_on_every_partition(events: Engine) -> None:
    sql(events, f'ALTER TABLE {PARENT} ADD CONSTRAINT fk_events_customer FOREIGN KEY '
                '("Customer") REFERENCES "Sales".customer (id) ON DELETE CASCADE; '
                f"ALTER TABLE {PARENT} ADD CONSTRAINT ck_events_qty CHECK (qty >= 0)")
    assert [o.action for o in run_ops(events, lambda op: [check(op), fk(op)])] == [
        "replace", "replace"]
    state = tree_constraints(events)
    for relation in tree(events):
        assert state[(relation, "ck_events_qty")][1] is True, relation
        assert fk_of(events, relation)[1] is True, relation
    definitions = sql(events, f"""SELECT DISTINCT pg_get_constraintdef(c.oid) FROM pg_constraint c
        JOIN pg_partition_tree('{PARENT}') t ON t.relid = c.conrelid
        WHERE c.contype IN ('c', 'f') ORDER BY 1""")
    assert definitions == [("CHECK ((qty > 0))",),
                           ('FOREIGN KEY ("Customer") REFERENCES "Sales".customer(id)',)]
    assert run_ops(events, lambda op: [check(op), fk(op)])[1].action == "none"


def test_interrupted_at_a_locked_partition_resumes_there(
        events: Engine, statement_log: StatementLog) -> None:
    """Another session holds partition 9 (as a long job would): the run gives up there
    after its lock retries; the 8 partitions before it stay validated; the re-run goes on."""
    sql(events, f"ALTER TABLE {PARENT} ADD CONSTRAINT ck_events_qty CHECK (qty > 0) NOT VALID")
    url = events.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as blocker:
        blocker.execute(f"LOCK TABLE {LEAVES[8]} IN SHARE UPDATE EXCLUSIVE MODE")
        with pytest.raises(LockRetriesExhausted, match="partition 9/12"):
            run_ops(events, lambda op: op.ensure_check_constraint(
                "ck_events_qty", "Events", "qty > 0", schema="Sales",
                lock_timeout="100ms", retries=0, lock_wait="300ms"))
        blocker.rollback()
    state = tree_constraints(events)
    oids = {rel: oid for (rel, name), (oid, _, _) in state.items() if name == "ck_events_qty"}
    assert sum(ok for (_, name), (_, ok, _) in state.items() if name == "ck_events_qty") == 8

    statement_log.statements.clear()
    assert run_ops(events, check).action == "validate"
    assert validates_of(statement_log, "ck_events_qty") == [*LEAVES[8:], PARENT]
    after = tree_constraints(events)
    assert {rel: oid for (rel, name), (oid, _, _) in after.items()
            if name == "ck_events_qty"} == oids


def test_partition_copies_are_found_by_what_they_check_not_by_name(events: Engine) -> None:
    """PostgreSQL 18: a partition keeps its own NOT NULL constraint's name when the parent
    gets one; the partition-by-partition VALIDATE finds it by column. Before 18 the syntax
    does not exist (the helper CHECK carries NOT NULL there, tested above)."""
    with events.connect() as conn:
        version = catalog.server_version_num(conn)
    add = f'ALTER TABLE {PARENT} ADD CONSTRAINT events_note_nn NOT NULL "Note" NOT VALID'
    if version < 180000:
        with pytest.raises(Exception, match="syntax error"):
            sql(events, add)
        return
    sql(events, f'ALTER TABLE {LEAVES[3]} ADD CONSTRAINT own_nn NOT NULL "Note"; {add}')
    with events.connect() as conn:
        leaves = catalog.leaf_constraints(conn, catalog.table_oid(conn, _table(PARENT)),
                                          "events_note_nn")
    assert [str(leaf.table) for leaf in leaves] == [str(_table(x)) for x in LEAVES]
    names = {str(leaf.table): (leaf.constraint.name, leaf.constraint.validated)
             for leaf in leaves if leaf.constraint is not None}
    assert len(names) == 12
    assert names["Sales.Events_04"] == ("own_nn", True)
    assert all(not valid for table, (_, valid) in names.items() if table != "Sales.Events_04")


def _table(quoted: str) -> TableName:
    schema, name = (part.strip('"') for part in quoted.split("."))
    return TableName(name, schema)


# --- the audit reads a partitioned table like any other ----------------------------------


def test_audit_counts_rows_across_partitions_and_sees_the_rules(events: Engine) -> None:
    metadata = MetaData()
    Table("customer", metadata, Column("id", BigInteger, primary_key=True), schema="Sales")
    Table("Events", metadata, Column("id", BigInteger, primary_key=True),
          Column("k", Integer, primary_key=True), Column("qty", Integer),
          Column("Note", Text, nullable=False), Column("Customer", BigInteger),
          CheckConstraint("qty > 0", name="ck_events_qty"),
          ForeignKeyConstraint(["Customer"], ["Sales.customer.id"], name="fk_events_customer"),
          schema="Sales")
    declared = rules_from_metadata(metadata)
    sql(events, f"UPDATE {LEAVES[0]} SET qty = -1 WHERE id IN (SELECT id FROM {LEAVES[0]} "
                f'LIMIT 2); UPDATE {LEAVES[11]} SET "Note" = NULL WHERE id IN '
                f"(SELECT id FROM {LEAVES[11]} LIMIT 3); UPDATE {LEAVES[5]} SET "
                f'"Customer" = 99 WHERE id = (SELECT min(id) FROM {LEAVES[5]})')

    def counts() -> dict[str, tuple[str, int]]:
        report = audit(events, declared)
        assert report.problems == []
        return {f.label: (f.state, f.violations) for f in report.findings}

    assert counts() == {"ck_events_qty": ("absent", 2), "Events.Note NOT NULL": ("absent", 3),
                        "fk_events_customer": ("absent", 1)}
    sql(events, f'UPDATE {PARENT} SET qty = 1 WHERE qty < 0; UPDATE {PARENT} SET "Note" = '
                f"'n' WHERE \"Note\" IS NULL; UPDATE {PARENT} SET \"Customer\" = 1 "
                'WHERE "Customer" = 99')
    run_ops(events, all_three)
    assert counts() == {"ck_events_qty": ("valid", 0), "Events.Note NOT NULL": ("valid", 0),
                        "fk_events_customer": ("valid", 0)}


def test_a_partitioned_table_without_partitions(engine: Engine) -> None:
    sql(engine, 'CREATE TABLE customer (id bigint PRIMARY KEY); CREATE TABLE "Empty" '
                "(id bigint, k integer, qty integer, customer bigint) PARTITION BY LIST (k)")

    def ops(op: Operations) -> list[Any]:
        return [op.ensure_check_constraint("ck_empty_qty", "Empty", "qty > 0"),
                op.ensure_not_null("Empty", "qty"),
                op.ensure_foreign_key("fk_empty_customer", "Empty", "customer", ["customer"],
                                      ["id"])]

    assert [o.action for o in run_ops(engine, ops)] == ["add", "set-not-null", "add"]
    assert sql(engine, """SELECT conname, convalidated FROM pg_constraint WHERE conrelid =
               '"Empty"'::regclass AND contype IN ('c', 'f') ORDER BY 1""") == [
        ("ck_empty_qty", True), ("fk_empty_customer", True)]
    assert [o.action for o in run_ops(engine, ops)] == ["none", "none", "none"]
