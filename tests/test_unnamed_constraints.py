"""Unnamed constraints, first class (issue 9), and foreign-key semantics (issue 7).

Models whose FOREIGN KEYs and CHECKs have no name, created the usual way
(``metadata.create_all``, i.e. what Alembic's ``create_table`` sends): the audit
finds them by structure and counts their orphans, a policy attached to them is
applied, and drift reports nothing extra; deferrable / MATCH FULL keys are
compared on those fields.
"""

from __future__ import annotations

import pytest
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Engine,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Table,
    Text,
)

from alembic_integrity.audit.core import audit
from alembic_integrity.repair import repair
from alembic_integrity.rules.kinds import ForeignKeyRule
from alembic_integrity.rules.metadata import rules_from_metadata
from alembic_integrity.rules.policies import Delete, on_violation
from alembic_integrity.verify.drift import drift
from conftest import run_ops, sql


def shop(deferrable: bool | None = None, policy: bool = False, twice: bool = False) -> MetaData:
    metadata = MetaData()
    Table("owner", metadata, Column("id", BigInteger, primary_key=True))
    info = on_violation(Delete()) if policy else {}
    extra = [ForeignKeyConstraint(["owner_id"], ["owner.id"])] if twice else []
    Table("item", metadata, Column("id", BigInteger, primary_key=True),
          Column("owner_id", BigInteger,
                 ForeignKey("owner.id", deferrable=deferrable, info=info)),
          Column("qty", Integer), Column("note", Text),
          CheckConstraint("qty > 0"), *extra)
    return metadata


@pytest.fixture
def created(engine: Engine) -> Engine:
    shop().create_all(engine)
    sql(engine, "INSERT INTO owner VALUES (1); INSERT INTO item VALUES (1, 1, 5, 'ok')")
    return engine


def orphans(engine: Engine) -> None:
    sql(engine, "ALTER TABLE item DISABLE TRIGGER ALL;"
                "INSERT INTO item VALUES (2, 99, 1, 'orphan'), (3, 98, 1, 'orphan');"
                "ALTER TABLE item ENABLE TRIGGER ALL")


def test_unnamed_rules_carry_postgresql_s_names_and_a_double_declaration_is_one_rule() -> None:
    rules = rules_from_metadata(shop(twice=True))
    assert rules.problems == []
    fks = [r for r in rules.rules if isinstance(r, ForeignKeyRule)]
    assert [(r.name, r.named) for r in fks] == [("item_owner_id_fkey", False)]
    assert {r.name for r in rules.rules} >= {"item_qty_check"}


def test_audit_counts_orphans_of_an_unnamed_fk_and_exits_0_when_clean(created: Engine) -> None:
    report = audit(created, rules_from_metadata(shop()))
    assert (report.problems, report.exit_code) == ([], 0)
    states = {f.label: (f.state, f.violations) for f in report.findings}
    assert states["item_owner_id_fkey"] == ("valid", 0)
    assert states["item_qty_check"] == ("valid", 0)

    orphans(created)
    report = audit(created, rules_from_metadata(shop()))
    finding = next(f for f in report.findings if f.label == "item_owner_id_fkey")
    assert (finding.violations, finding.sample, report.exit_code) == (2, [2, 3], 1)
    assert "matched by definition" in finding.detail


def test_a_policy_on_an_unnamed_fk_repairs_its_orphans(created: Engine) -> None:
    orphans(created)
    result = repair(created, rules_from_metadata(shop(policy=True)), apply=True)
    assert result.changed == 2 and result.for_person == 0
    assert sql(created, "SELECT id FROM item ORDER BY id") == [(1,)]


def test_drift_does_not_report_a_model_s_own_unnamed_constraints(created: Engine) -> None:
    with created.connect() as conn:
        result = drift(conn, shop())
    assert (result.missing, result.extra, result.unchecked) == ([], [], [])


def test_drift_matches_an_fk_the_database_named_otherwise(created: Engine) -> None:
    sql(created, "ALTER TABLE item RENAME CONSTRAINT item_owner_id_fkey TO legacy_fk")
    with created.connect() as conn:
        result = drift(conn, shop())
    assert (result.missing, result.extra) == ([], [])


def test_drift_reports_a_deferrable_difference(created: Engine) -> None:
    with created.connect() as conn:
        result = drift(conn, shop(deferrable=True))
    assert len(result.missing) == 1, result.missing
    assert result.missing[0].startswith("FOREIGN KEY (unnamed in the models) on item differs")
    assert "DEFERRABLE" in result.missing[0]


def test_a_deferrable_match_full_fk_is_created_with_its_semantics(engine: Engine) -> None:
    metadata = MetaData()
    Table("parent", metadata, Column("a", Integer, primary_key=True),
          Column("b", Integer, primary_key=True))
    Table("child", metadata, Column("id", Integer, primary_key=True),
          Column("a", Integer), Column("b", Integer))
    metadata.create_all(engine)
    sql(engine, "INSERT INTO parent VALUES (1, 1); INSERT INTO child VALUES (1, 1, 1), "
                "(2, NULL, NULL), (3, 1, NULL)")
    args = ("fk_child_parent", "child", "parent", ["a", "b"], ["a", "b"])
    kw = {"deferrable": True, "initially": "DEFERRED", "match": "FULL"}

    with pytest.raises(Exception, match="1 row"):  # MATCH FULL: (1, NULL) breaks it
        run_ops(engine, lambda op: op.ensure_foreign_key(*args, **kw))
    sql(engine, "DELETE FROM child WHERE id = 3")
    outcome = run_ops(engine, lambda op: op.ensure_foreign_key(*args, **kw))
    assert outcome.action == "validate"  # the NOT VALID one the failed run left
    assert sql(engine, "SELECT condeferrable, condeferred, confmatchtype FROM pg_constraint "
                       "WHERE conname = 'fk_child_parent'") == [(True, True, "f")]
    assert run_ops(engine, lambda op: op.ensure_foreign_key(*args, **kw)).action == "none"
    assert run_ops(engine, lambda op: op.ensure_foreign_key(*args)).action == "replace"


def test_ensure_constraint_renamed_is_idempotent_and_refuses_ambiguity(created: Engine) -> None:
    rename = ("item_qty_check", "ck_item_qty", "item")
    assert run_ops(created, lambda op: op.ensure_constraint_renamed(*rename)).action == "rename"
    assert run_ops(created, lambda op: op.ensure_constraint_renamed(*rename)).action == "none"
    sql(created, "ALTER TABLE item ADD CONSTRAINT item_qty_check CHECK (qty > 0)")
    with pytest.raises(Exception, match="has both item_qty_check and ck_item_qty"):
        run_ops(created, lambda op: op.ensure_constraint_renamed(*rename))


def test_an_ensure_op_without_a_name_says_which_convention_gives_one() -> None:
    from alembic_integrity.errors import ConfigurationError
    from alembic_integrity.operations.ops import EnsureForeignKeyOp

    with pytest.raises(ConfigurationError) as err:
        EnsureForeignKeyOp(None, "item", "owner", ["owner_id"], ["id"])  # type: ignore[arg-type]
    message = str(err.value)
    assert "'item_owner_id_fkey' as PostgreSQL would name it" in message
    assert 'naming_convention={"fk": "fk_%(table_name)s_%(column_0_name)s' in message


def test_repair_true_finds_the_policies_of_an_unnamed_fk(created: Engine) -> None:
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    sql(created, "ALTER TABLE item DROP CONSTRAINT item_owner_id_fkey")
    orphans(created)
    with created.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"target_metadata": shop(policy=True)})
        with ctx.begin_transaction():
            outcome = Operations(ctx).ensure_foreign_key(
                "item_owner_id_fkey", "item", "owner", ["owner_id"], ["id"], repair=True)
    assert outcome.action == "add"
    assert sql(created, "SELECT id FROM item ORDER BY id") == [(1,)]
    assert sql(created, "SELECT convalidated FROM pg_constraint "
                        "WHERE conname = 'item_owner_id_fkey'") == [(True,)]


def test_offline_rename_is_safe_to_run_twice(created: Engine) -> None:
    import io

    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql",
                                     opts={"as_sql": True, "output_buffer": buffer})
    Operations(ctx).ensure_constraint_renamed("item_qty_check", "ck_item_qty", "item")
    script = buffer.getvalue()
    assert "DO $$BEGIN IF EXISTS" in script and "RENAME CONSTRAINT item_qty_check TO " \
        "ck_item_qty" in script
    for _ in range(2):
        sql(created, script)
    assert sql(created, "SELECT conname FROM pg_constraint WHERE conrelid = 'item'::regclass "
                        "AND contype = 'c'") == [("ck_item_qty",)]


def test_drift_does_not_report_sqlalchemy_s_own_type_checks(engine: Engine) -> None:
    from sqlalchemy import Boolean, Enum

    metadata = MetaData()
    Table("flagged", metadata, Column("id", Integer, primary_key=True),
          Column("done", Boolean(create_constraint=True)),
          Column("state", Enum("new", "old", native_enum=False, create_constraint=True)))
    metadata.create_all(engine)
    assert sql(engine, "SELECT conname FROM pg_constraint WHERE contype = 'c' "
                       "AND conrelid = 'flagged'::regclass") == [("flagged_state_check",)]
    with engine.connect() as conn:
        result = drift(conn, metadata)
    assert (result.missing, result.extra) == ([], [])
