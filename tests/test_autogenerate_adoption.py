"""Autogenerate on real-world model shapes (issue 9): revisions that pass ``verify``.

A revision written for a new table plus a new CHECK passes verify's re-run check
(plain operations render ``if_not_exists`` / ``if_exists``); a foreign key the
models declare twice, or leave unnamed, is no phantom change; a constraint
renamed in the models becomes ``ensure_constraint_renamed``; deferrable foreign
keys are created and compared with their timing.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine

from alembic_integrity.testing.pytest_plugin import fresh_database
from alembic_integrity.verify import verify
from test_autogenerate import Project

CONVENTION = ('naming_convention={"ix": "ix_%(column_0_label)s", '
              '"ck": "ck_%(table_name)s_%(constraint_name)s", '
              '"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}')


def source(body: str, convention: bool = True) -> str:
    head = textwrap.dedent(f"""
        from sqlalchemy import (BigInteger, CheckConstraint, Column, Enum, ForeignKey,
                                ForeignKeyConstraint, Integer, MetaData, Table, Text)

        metadata = MetaData({CONVENTION if convention else ""})
        Table("customer", metadata, Column("id", BigInteger, primary_key=True),
              Column("name", Text))
    """)
    return head + textwrap.dedent(body)


@pytest.fixture
def base(tmp_path: Path, integrity_database_url: str) -> Project:
    project = Project(tmp_path, integrity_database_url)
    return project


def start(project: Project, body: str = "", convention: bool = True) -> None:
    project.write_models(source(body, convention))
    project.autogenerate()
    command.upgrade(project.cfg, "head")
    project.assert_quiet()


def fk_rows(project: Project, table: str) -> list[tuple[object, ...]]:
    engine = create_engine(project.url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT conname, condeferrable, condeferred, pg_get_constraintdef(oid) "
            f"FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'f' "
            "ORDER BY conname").all()
    engine.dispose()
    return [tuple(r) for r in rows]


NEW_TABLE = """
    Table("item", metadata, Column("id", BigInteger, primary_key=True),
          Column("customer_id", BigInteger, ForeignKey("customer.id")),
          Column("qty", Integer, nullable=False, index=True),
          Column("state", Enum("new", "done", name="item_state")),
          CheckConstraint("qty > 0", name="qty_positive"))
"""


def test_new_table_and_new_check_revision_passes_verify_with_its_rerun(
        base: Project, integrity_postgres_url: str) -> None:
    """With a native ENUM column too: a re-run skips the existing table, types and all."""
    start(base)
    base.write_models(source(NEW_TABLE).replace(
        'Column("name", Text))',
        'Column("name", Text), CheckConstraint("length(name) > 0", name="name_set"))'))

    revision = base.autogenerate()

    up, down = revision.ops("upgrade"), revision.ops("downgrade")
    assert any(line.startswith("op.create_table('item'") for line in up), revision.text
    assert "if_not_exists=True" in revision._section("upgrade").split("op.create_index")[0]
    assert any(line.startswith("op.create_index(") and "if_not_exists=True" in line
               for line in up), up
    assert ("op.ensure_check_constraint('ck_customer_name_set', 'customer', "
            "'length(name) > 0')") in up
    assert "op.drop_table('item', if_exists=True)" in down
    # Alembic's drop_table leaves the ENUM type create_table made; the downgrade drops it
    assert down[down.index("op.drop_table('item', if_exists=True)") + 1] == \
        "op.execute('DROP TYPE IF EXISTS item_state')"
    assert "\nimport alembic_integrity" in revision.text
    assert any(line.startswith("op.drop_index(") and "if_exists=True" in line
               for line in down), down
    command.upgrade(base.cfg, "head")
    base.assert_quiet()

    with fresh_database(integrity_postgres_url, "verify") as empty:
        report = verify(base.root / "alembic.ini", empty, strict=True)
    assert report.exit_code == 0, report.summary() + "\n" + "\n".join(
        f"{s.name}: {s.message} {s.details}" for s in report.failures)
    reruns = [s for s in report.steps if s.kind == "rerun"]
    assert [s.revision for s in reruns] == ["0001", "0003"] and all(s.ok for s in reruns)


@pytest.mark.parametrize("convention", [False, True])
def test_a_foreign_key_declared_twice_is_no_phantom_change(base: Project,
                                                          convention: bool) -> None:
    twice = """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("customer_id", BigInteger, ForeignKey("customer.id")),
              ForeignKeyConstraint(["customer_id"], ["customer.id"]))
    """
    base.write_models(source(twice, convention=convention))
    base.sql("CREATE TABLE customer (id bigint PRIMARY KEY, name text);"
             "CREATE TABLE item (id bigint PRIMARY KEY, customer_id bigint "
             "REFERENCES customer (id))")

    if not convention:
        base.assert_quiet()
        assert [r[0] for r in fk_rows(base, "item")] == ["item_customer_id_fkey"]
        return
    # the models name it now: one rename, never an ensure_foreign_key whose
    # downgrade would drop the real key
    revision = base.autogenerate()
    assert revision.ops("upgrade") == [
        "op.ensure_constraint_renamed('item_customer_id_fkey', 'fk_item_customer_id_customer', "
        "'item')"], revision.text
    command.upgrade(base.cfg, "head")
    base.assert_quiet()
    assert [r[0] for r in fk_rows(base, "item")] == ["fk_item_customer_id_customer"]


def test_an_unnamed_fk_on_an_existing_table_gets_postgresql_s_name(base: Project) -> None:
    table = """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("customer_id", BigInteger{fk}))
    """
    start(base, table.format(fk=""), convention=False)
    base.write_models(source(table.format(fk=', ForeignKey("customer.id")'),
                             convention=False))

    revision = base.autogenerate()

    assert revision.ops("upgrade") == [
        "op.ensure_foreign_key('item_customer_id_fkey', 'item', 'customer', ['customer_id'], "
        "['id'])"]
    assert revision.ops("downgrade") == [
        "op.ensure_constraint_dropped('item_customer_id_fkey', 'item')"]
    command.upgrade(base.cfg, "head")
    base.assert_quiet()


@pytest.mark.parametrize("kind", ["foreign key", "check"])
def test_a_renamed_constraint_is_renamed_not_dropped(base: Project, kind: str) -> None:
    before = """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("customer_id", BigInteger),
              ForeignKeyConstraint(["customer_id"], ["customer.id"], name="{fk}"),
              CheckConstraint("id > 0", name="{ck}"))
    """
    start(base, before.format(fk="item_customer", ck="id_positive"))
    fk, ck = ("customer_link", "id_positive") if kind == "foreign key" else (
        "item_customer", "id_above_zero")
    base.write_models(source(before.format(fk=fk, ck=ck)))

    revision = base.autogenerate()

    old, new = (("fk_item_customer_id_customer", "customer_link") if kind == "foreign key"
                else ("ck_item_id_positive", "ck_item_id_above_zero"))
    if kind == "foreign key":  # an explicit name= wins over the convention's fk token
        old = "item_customer"
    assert revision.ops("upgrade") == [f"op.ensure_constraint_renamed({old!r}, {new!r}, 'item')"]
    assert revision.ops("downgrade") == [
        f"op.ensure_constraint_renamed({new!r}, {old!r}, 'item')"]
    command.upgrade(base.cfg, "head")
    base.assert_quiet()
    command.stamp(base.cfg, "0001")
    command.upgrade(base.cfg, "head")  # re-run: already renamed, nothing to do
    command.downgrade(base.cfg, "0001")
    base.write_models(source(before.format(fk="item_customer", ck="id_positive")))
    revision.path.unlink()
    base.assert_quiet()


def test_a_deferrable_foreign_key_is_created_and_compared_deferrable(base: Project) -> None:
    table = """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("customer_id", BigInteger),
              ForeignKeyConstraint(["customer_id"], ["customer.id"]{extra}))
    """
    start(base, table.format(extra=""))
    base.write_models(source(table.format(extra=", deferrable=True, initially='DEFERRED'")))

    revision = base.autogenerate()

    assert revision.ops("upgrade") == [
        "op.ensure_foreign_key('fk_item_customer_id_customer', 'item', 'customer', "
        "['customer_id'], ['id'], deferrable=True, initially='DEFERRED')"]
    assert revision.ops("downgrade") == [
        "op.ensure_foreign_key('fk_item_customer_id_customer', 'item', 'customer', "
        "['customer_id'], ['id'])"]
    command.upgrade(base.cfg, "head")
    assert fk_rows(base, "item")[0][:3] == ("fk_item_customer_id_customer", True, True)
    base.assert_quiet()
    command.downgrade(base.cfg, "-1")
    assert fk_rows(base, "item")[0][:3] == ("fk_item_customer_id_customer", False, False)


def test_an_unnamed_check_on_an_existing_table_gets_postgresql_s_name(base: Project) -> None:
    table = """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("qty", Integer){check})
    """
    start(base, table.format(check=""), convention=False)
    base.sql("ALTER TABLE item ADD CONSTRAINT item_qty_check CHECK (id > 0)")  # name taken
    base.write_models(source(table.format(check=', CheckConstraint("qty > 0"), '
                                                'CheckConstraint("id > 0")'), convention=False))

    revision = base.autogenerate()

    assert revision.ops("upgrade") == [
        "op.ensure_check_constraint('item_qty_check1', 'item', 'qty > 0')"], revision.text
    command.upgrade(base.cfg, "head")
    base.assert_quiet()


def test_verify_strict_passes_when_alembic_created_unnamed_constraints(
        base: Project, integrity_postgres_url: str) -> None:
    """``item_customer_id_fkey`` and ``item_qty_check``: PostgreSQL's names for the models'
    unnamed constraints are not "in the database, not in the models"."""
    start(base, """
        Table("item", metadata, Column("id", BigInteger, primary_key=True),
              Column("customer_id", BigInteger, ForeignKey("customer.id")),
              Column("qty", Integer, CheckConstraint("qty > 0")))
    """, convention=False)
    assert [r[0] for r in fk_rows(base, "item")] == ["item_customer_id_fkey"]

    with fresh_database(integrity_postgres_url, "verify") as empty:
        report = verify(base.root / "alembic.ini", empty, strict=True)

    drift_step = next(s for s in report.steps if s.kind == "drift")
    assert drift_step.ok and not drift_step.details, drift_step.details
    assert report.exit_code == 0, [f"{s.name}: {s.message}" for s in report.failures]


def test_inside_a_batch_block_indexes_keep_alembic_s_plain_form() -> None:
    """Alembic's batch table copy (SQLite) takes no IF [NOT] EXISTS for indexes (a
    TypeError), and Alembic renders none for columns in a batch block."""
    import sqlalchemy as sa
    from alembic.autogenerate.api import AutogenContext
    from alembic.autogenerate.render import renderers
    from alembic.operations import ops
    from alembic.runtime.migration import MigrationContext

    from alembic_integrity.autogenerate import integrity_autogenerate

    context = MigrationContext.configure(dialect_name="postgresql", opts={
        **integrity_autogenerate(), "alembic_module_prefix": "op.",
        "sqlalchemy_module_prefix": "sa.", "user_module_prefix": None})
    autogen = AutogenContext(context)
    index = ops.CreateIndexOp("ix_t_a", "t", ["a"])
    column = ops.AddColumnOp("t", sa.Column("x", sa.Integer))

    def render(op: object) -> str:
        return str(renderers.dispatch(op)(autogen, op))

    assert "if_not_exists=True" in render(index) and "if_not_exists=True" in render(column)
    autogen._has_batch = True
    assert "if_not_exists" not in render(index)
    assert "if_not_exists" not in render(column)


def test_a_downgrade_drops_an_enum_type_only_its_table_uses() -> None:
    import sqlalchemy as sa
    from alembic.autogenerate.api import AutogenContext
    from alembic.autogenerate.render import renderers
    from alembic.operations import ops
    from alembic.runtime.migration import MigrationContext

    from alembic_integrity.autogenerate import integrity_autogenerate

    metadata = sa.MetaData()
    state = sa.Enum("new", "done", name="state")
    one = sa.Table("one", metadata, sa.Column("id", sa.Integer, primary_key=True),
                   sa.Column("s", state), sa.Column("k", sa.Enum("a", name="kind")))
    sa.Table("two", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("s", sa.Enum("new", "done", name="state")))
    context = MigrationContext.configure(dialect_name="postgresql", opts={
        **integrity_autogenerate(), "alembic_module_prefix": "op.",
        "sqlalchemy_module_prefix": "sa.", "user_module_prefix": None})
    autogen = AutogenContext(context, metadata=metadata)
    op = ops.DropTableOp.from_table(one)

    lines = renderers.dispatch(op)(autogen, op)

    assert lines == ["op.drop_table('one', if_exists=True)",
                     "op.execute('DROP TYPE IF EXISTS kind')"]  # "state" is used by "two"
