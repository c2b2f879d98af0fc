"""What differs by PostgreSQL major, and what must not write: NOT NULL on 18, helper names,
same-name constraints of another kind, re-runs that keep OIDs, and audits of a hot
standby and of read-only roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import (
    CheckConstraint,
    Column,
    Engine,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
)
from sqlalchemy.engine import make_url

from alembic_integrity.audit.core import AuditReport, audit
from alembic_integrity.errors import CatalogError, ValidationFailed
from alembic_integrity.pg import catalog, snapshot
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.pg.throwaway import ThrowawayServer
from alembic_integrity.pg.throwaway.standby import wait_replayed
from alembic_integrity.rules.kinds import NotNullRule
from alembic_integrity.rules.metadata import rules_from_metadata
from alembic_integrity.verify.drift import drift
from conftest import StatementLog, run_ops, sql

SCHEMA = """
CREATE TABLE parent (id integer PRIMARY KEY);
CREATE TABLE child (id integer PRIMARY KEY, qty integer, parent_id integer, note text,
                    code text CONSTRAINT child_code_key UNIQUE);
INSERT INTO parent SELECT g FROM generate_series(1, 10) g;
INSERT INTO child SELECT g, g, 1 + g % 10, 'n', 'c' || g FROM generate_series(1, 100) g;
"""
DIRT = """
UPDATE child SET qty = -1 WHERE id IN (5, 6, 7);
UPDATE child SET note = NULL WHERE id IN (8, 9);
UPDATE child SET parent_id = 99 WHERE id IN (11, 12, 13, 14);
ALTER TABLE child ADD CONSTRAINT ck_child_qty CHECK (qty > 0) NOT VALID;
"""


def version(engine: Engine) -> catalog.Features:
    with engine.connect() as conn:
        return catalog.features(conn)


def models() -> MetaData:
    metadata = MetaData()
    Table("parent", metadata, Column("id", Integer, primary_key=True))
    Table(
        "child", metadata,
        Column("id", Integer, primary_key=True),
        Column("qty", Integer),
        Column("parent_id", Integer),
        Column("note", Text, nullable=False),
        Column("code", Text),
        CheckConstraint("qty>0", name="ck_child_qty"),
        ForeignKeyConstraint(["parent_id"], ["parent.id"], name="fk_child_parent"),
    )  # fmt: skip
    return metadata


def counts(report: AuditReport) -> dict[str, tuple[str, int, list[object]]]:
    return {f.label: (f.state, f.violations, f.sample) for f in report.findings}


EXPECTED = {
    "ck_child_qty": ("not_valid", 3, [5, 6, 7]),
    "child.note NOT NULL": ("absent", 2, [8, 9]),
    "fk_child_parent": ("absent", 4, [11, 12, 13, 14]),
}


@pytest.fixture
def db(engine: Engine) -> Engine:
    sql(engine, SCHEMA)
    return engine


def constraint_oids(engine: Engine) -> dict[str, tuple[int, str, bool]]:
    rows = sql(engine, "SELECT conname, oid, contype::text, convalidated FROM pg_constraint "
                       "WHERE conrelid = 'child'::regclass")
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


# --- NOT NULL: native on 18, helper before ----------------------------------------------


def test_not_null_path_by_major_leaves_no_helper(db: Engine, statement_log: StatementLog) -> None:
    outcome = run_ops(db, lambda op: op.ensure_not_null("child", "qty"))
    assert outcome.action == "set-not-null"
    ddl = statement_log.ddl()
    found = constraint_oids(db)
    assert [c for c, (_, kind, _) in found.items() if kind == "c"] == []  # no helper left
    if version(db).native_not_null:
        assert ddl == ['ALTER TABLE child ADD CONSTRAINT child_qty_not_null NOT NULL qty NOT VALID',
                       "ALTER TABLE child VALIDATE CONSTRAINT child_qty_not_null"]
        assert found["child_qty_not_null"][1:] == ("n", True)
    else:
        assert ddl[0].startswith("ALTER TABLE child DROP CONSTRAINT IF EXISTS child_qty_nn_helper")
        assert "ADD CONSTRAINT child_qty_nn_helper CHECK (qty IS NOT NULL) NOT VALID" in ddl[1]
    assert sql(db, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'child'::regclass "
                   "AND attname = 'qty'") == [(True,)]


def test_helper_name_never_pg_default() -> None:
    rule = NotNullRule(TableName("t" * 40), "c" * 40)
    assert rule.helper_name.endswith("_nn_helper") and len(rule.helper_name.encode()) <= 63
    assert rule.helper_name != rule.name and rule.legacy_helper_name == rule.name


def test_not_valid_not_null_is_seen_and_validated(db: Engine) -> None:
    """A NOT VALID NOT NULL (18: native; before: the helper) is not_valid, counted, drifted."""
    sql(db, "UPDATE child SET note = NULL WHERE id = 3")
    native = version(db).native_not_null
    if native:
        sql(db, "ALTER TABLE child ADD CONSTRAINT child_note_not_null NOT NULL note NOT VALID")
    else:
        sql(db, "ALTER TABLE child ADD CONSTRAINT child_note_nn_helper "
                "CHECK (note IS NOT NULL) NOT VALID")
    report = audit(db, rules_from_metadata(models()))
    assert counts(report)["child.note NOT NULL"] == ("not_valid", 1, [3])
    with db.connect() as conn:
        found = drift(conn, models()).missing
        columns = snapshot.take(conn).columns
    assert any(line.startswith("child.note: NOT NULL child_note_not_null is NOT VALID")
               for line in found) if native else any("allows NULL" in line for line in found)
    assert columns[("public", "child", "note")].not_null is False
    with pytest.raises(ValidationFailed, match="1 row"):
        run_ops(db, lambda op: op.ensure_not_null("child", "note"))
    sql(db, "UPDATE child SET note = 'x' WHERE id = 3")
    outcome = run_ops(db, lambda op: op.ensure_not_null("child", "note"))
    assert outcome.action == ("validate" if native else "set-not-null")
    assert counts(audit(db, rules_from_metadata(models())))["child.note NOT NULL"][:2] == \
        ("valid", 0)
    assert [c for c, (_, kind, _) in constraint_oids(db).items() if kind == "c"] == []


def test_resumes_from_a_valid_helper_under_the_new_name(db: Engine) -> None:
    sql(db, "ALTER TABLE child ADD CONSTRAINT child_qty_nn_helper CHECK (qty IS NOT NULL)")
    outcome = run_ops(db, lambda op: op.ensure_not_null("child", "qty"))
    assert outcome.detail == "helper check child_qty_nn_helper valid"
    assert "child_qty_nn_helper" not in constraint_oids(db)


# --- never replace another kind of constraint -------------------------------------------


def test_same_name_unique_is_never_replaced(db: Engine) -> None:
    before = constraint_oids(db)["child_code_key"]
    with pytest.raises(CatalogError, match=r"already has a UNIQUE constraint named "
                                           r"child_code_key .*not a CHECK"):
        run_ops(db, lambda op: op.ensure_check_constraint("child_code_key", "child",
                                                          "qty > 0"))
    with pytest.raises(CatalogError, match=r"UNIQUE .*not a FOREIGN KEY"):
        run_ops(db, lambda op: op.ensure_foreign_key("child_code_key", "child", "parent",
                                                     ["parent_id"], ["id"]))
    sql(db, "ALTER TABLE child ADD CONSTRAINT ck_other CHECK (qty > 0)")
    with pytest.raises(CatalogError, match=r"CHECK constraint named ck_other .*not a FOREIGN"):
        run_ops(db, lambda op: op.ensure_foreign_key("ck_other", "child", "parent",
                                                     ["parent_id"], ["id"]))
    sql(db, "ALTER TABLE child ADD CONSTRAINT fk_p FOREIGN KEY (parent_id) REFERENCES parent")
    with pytest.raises(CatalogError, match=r"FOREIGN KEY constraint named fk_p .*not a CHECK"):
        run_ops(db, lambda op: op.ensure_check_constraint("fk_p", "child", "qty > 0"))
    after = constraint_oids(db)
    assert after["child_code_key"] == before
    assert sql(db, "SELECT count(*) FROM pg_indexes WHERE indexname = 'child_code_key'") == [(1,)]
    # Dropped only when asked by name, and the outcome says what it was.
    dropped = run_ops(db, lambda op: op.ensure_constraint_dropped("child_code_key", "child"))
    assert (dropped.action, dropped.detail) == ("drop", "present: UNIQUE (code)")


def test_same_name_unique_and_not_null(db: Engine) -> None:
    """The NOT NULL's own name (18) or helper name (before) held by a UNIQUE: error, no drop."""
    name = "child_qty_not_null" if version(db).native_not_null else "child_qty_nn_helper"
    sql(db, f"ALTER TABLE child ADD CONSTRAINT {name} UNIQUE (qty)")
    with pytest.raises(CatalogError, match=f"UNIQUE constraint named {name}"):
        run_ops(db, lambda op: op.ensure_not_null("child", "qty"))
    assert constraint_oids(db)[name][1] == "u"


# --- re-runs change nothing ----------------------------------------------------------------


def test_re_runs_keep_the_same_constraint_oids(db: Engine, statement_log: StatementLog) -> None:
    def migrate(op):  # type: ignore[no-untyped-def]
        op.ensure_check_constraint("ck_child_qty", "child", "qty > 0")
        op.ensure_not_null("child", "note")
        return op.ensure_foreign_key("fk_child_parent", "child", "parent", ["parent_id"], ["id"])

    run_ops(db, migrate)
    first = constraint_oids(db)
    statement_log.statements.clear()
    run_ops(db, migrate)
    assert statement_log.ddl() == []
    assert constraint_oids(db) == first


# --- audits that write nothing: hot standby, read-only roles ---------------------------------


@pytest.fixture(scope="module")
def primary() -> Iterator[ThrowawayServer]:
    with ThrowawayServer(docker=False) as server:
        yield server


def test_audit_of_a_hot_standby(primary: ThrowawayServer) -> None:
    engine = create_engine(primary.url)
    try:
        sql(engine, SCHEMA + DIRT)
        with primary.standby() as standby_url:
            wait_replayed(primary.url, standby_url)
            replica = create_engine(standby_url)
            try:
                assert sql(replica, "SELECT pg_is_in_recovery()") == [(True,)]
                report = audit(replica, rules_from_metadata(models()))
                with replica.connect() as conn:
                    drifted = drift(conn, models()).missing
            finally:
                replica.dispose()
        assert report.problems == []
        assert counts(report) == EXPECTED
        assert audit(engine, rules_from_metadata(models())).findings == report.findings
        assert len(drifted) == 3  # CHECK NOT VALID, NOT NULL and FK missing: read, not written
    finally:
        engine.dispose()


@pytest.fixture
def reader_url(db: Engine) -> Iterator[str]:
    """A role that may only SELECT, and whose sessions default to read only."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    sql(db, DIRT)
    sql(db, f"CREATE ROLE {role} LOGIN; GRANT SELECT ON parent, child TO {role}; "
            f"ALTER ROLE {role} SET default_transaction_read_only = on")
    yield make_url(str(db.url)).set(username=role).render_as_string(hide_password=False)
    sql(db, f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_audit_as_a_read_only_select_only_role(reader_url: str) -> None:
    engine = create_engine(reader_url)
    try:
        assert sql(engine, "SHOW default_transaction_read_only") == [("on",)]
        report = audit(engine, rules_from_metadata(models()))
    finally:
        engine.dispose()
    assert report.problems == []
    assert counts(report) == EXPECTED


def test_autogenerate_sees_a_not_null_that_is_not_valid(tmp_path: Path,
                                                       integrity_database_url: str) -> None:
    """Reflection calls a NOT VALID NOT NULL (18) NOT NULL; autogenerate still proposes it."""
    from test_autogenerate import Project
    from test_autogenerate import models as project_models

    project = Project(tmp_path, integrity_database_url)
    project.sql('CREATE SCHEMA "Sales"; CREATE SCHEMA scratch')
    project.write_models(project_models())
    project.autogenerate()
    command.upgrade(project.cfg, "head")
    project.write_models(project_models(qty_nullable=False))
    engine = create_engine(project.url)
    try:
        if version(engine).native_not_null:
            project.sql('ALTER TABLE "Sales"."Order" ADD CONSTRAINT "Order_qty_not_null" '
                        "NOT NULL qty NOT VALID")
    finally:
        engine.dispose()
    proposed = project.autogenerate(keep=False).ops("upgrade")
    assert proposed == ["op.ensure_not_null('Order', 'qty', schema='Sales')"]
