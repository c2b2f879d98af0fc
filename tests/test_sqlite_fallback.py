"""On SQLite (projects that also run there) ``ensure_*`` is the plain Alembic operation.

Batch mode, one log line per operation saying the lock-safe path is
PostgreSQL-only, nothing redone on a re-run; offline, no traceback either.
"""

from __future__ import annotations

import io
import logging
import textwrap
from pathlib import Path

import alembic
import pytest
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import alembic_integrity  # noqa: F401  (registers op.ensure_*)

REVISION = '''
"""sqlite revision using the toolkit"""
import sqlalchemy as sa
from alembic import op

import alembic_integrity  # noqa: F401

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("owner", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("legacy", sa.Text), if_not_exists=True)
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("qty", sa.Integer), sa.Column("owner_id", sa.Integer),
                    sa.Column("note", sa.Text), if_not_exists=True)
    op.ensure_check_constraint("ck_item_qty", "item", "qty > 0")
    op.ensure_foreign_key("fk_item_owner", "item", "owner", ["owner_id"], ["id"])
    op.ensure_not_null("item", "qty")
    op.ensure_check_constraint("ck_item_note", "item", "length(note) > 0")
    op.ensure_constraint_dropped("ck_item_note", "item")
    op.add_column("item", sa.Column("extra", sa.Text), if_not_exists=True)
    op.drop_column("owner", "legacy", if_exists=True)


def downgrade():
    op.add_column("owner", sa.Column("legacy", sa.Text), if_not_exists=True)
    op.drop_column("item", "extra", if_exists=True)
    op.ensure_nullable("item", "qty")
    op.ensure_constraint_dropped("fk_item_owner", "item")
    op.ensure_constraint_dropped("ck_item_qty", "item")
    op.drop_table("item", if_exists=True)
    op.drop_table("owner", if_exists=True)
'''

ENV_PY = '''
from alembic import context
from sqlalchemy import create_engine

config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
'''


@pytest.fixture
def project(tmp_path: Path) -> Config:
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    templates = Path(alembic.__file__).parent / "templates" / "generic"
    (tmp_path / "migrations" / "script.py.mako").write_text(
        (templates / "script.py.mako").read_text())
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY)
    (versions / "0001_sqlite.py").write_text(REVISION)
    (tmp_path / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {tmp_path / 'migrations'}\n"
        f"sqlalchemy.url = sqlite:///{tmp_path / 'app.db'}\n")
    return Config(str(tmp_path / "alembic.ini"), stdout=io.StringIO())


def constraints(url: str) -> tuple[set[str], set[str], bool]:
    engine = create_engine(url)
    insp = inspect(engine)
    checks = {c["name"] for c in insp.get_check_constraints("item")}
    fks = {c["name"] for c in insp.get_foreign_keys("item")}
    qty_nullable = next(c["nullable"] for c in insp.get_columns("item") if c["name"] == "qty")
    engine.dispose()
    return checks, fks, qty_nullable


def test_ensure_ops_run_as_plain_batch_ops_on_sqlite_and_rerun_cleanly(
        project: Config, caplog: pytest.LogCaptureFixture) -> None:
    url = str(project.get_main_option("sqlalchemy.url"))
    with caplog.at_level(logging.INFO, logger="alembic_integrity"):
        command.upgrade(project, "head")
    assert constraints(url) == ({"ck_item_qty"}, {"fk_item_owner"}, False)
    notes = [r.getMessage() for r in caplog.records if "PostgreSQL-only" in r.getMessage()]
    assert len(notes) == 5 and all(" on sqlite: plain Alembic operation" in n for n in notes)

    command.stamp(project, "base")
    command.upgrade(project, "head")  # the re-run: everything in place, nothing fails
    assert constraints(url) == ({"ck_item_qty"}, {"fk_item_owner"}, False)
    insp = inspect(create_engine(url))
    assert [c["name"] for c in insp.get_columns("item")] == ["id", "qty", "owner_id", "note",
                                                             "extra"]
    assert [c["name"] for c in insp.get_columns("owner")] == ["id"]  # IF [NOT] EXISTS

    engine = create_engine(url)
    with engine.connect() as conn, pytest.raises(Exception, match="CHECK constraint failed"):
        conn.exec_driver_sql("INSERT INTO item (id, qty) VALUES (1, 0)")
    engine.dispose()

    command.downgrade(project, "base")
    assert not inspect(create_engine(url)).has_table("item")


def test_offline_sqlite_prints_a_comment_instead_of_failing(project: Config) -> None:
    buffer = io.StringIO()
    project.output_buffer = buffer
    command.upgrade(project, "head", sql=True)
    script = buffer.getvalue()
    assert "to_regclass" not in script
    assert ("-- CHECK ck_item_qty on item: SQLite needs batch mode, which needs the table's "
            "shape; run this revision online") in script


def test_offline_for_another_dialect_prints_the_plain_statements() -> None:
    buffer = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="mysql",
                                     opts={"as_sql": True, "output_buffer": buffer})
    op = Operations(ctx)
    op.ensure_check_constraint("ck_item_qty", "item", "qty > 0")
    op.ensure_foreign_key("fk_item_owner", "item", "owner", ["owner_id"], ["id"],
                          ondelete="CASCADE")
    op.ensure_constraint_renamed("ck_item_qty", "ck_item_qty_positive", "item")
    script = textwrap.dedent(buffer.getvalue())
    assert "ALTER TABLE item ADD CONSTRAINT ck_item_qty CHECK (qty > 0)" in script
    assert ("ALTER TABLE item ADD CONSTRAINT fk_item_owner FOREIGN KEY(owner_id) "
            "REFERENCES owner (id) ON DELETE CASCADE") in script
    assert "ALTER TABLE item RENAME CONSTRAINT ck_item_qty TO ck_item_qty_positive" in script
    assert "NOT VALID" not in script and "lock_timeout" not in script


PORTABLE_0003 = '''"""a CHECK the toolkit's way, on SQLite and PostgreSQL alike"""
import alembic_integrity  # noqa: F401
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.ensure_check_constraint("ck_task_title_set", "task", "length(title) > 0")


def downgrade() -> None:
    op.ensure_constraint_dropped("ck_task_title_set", "task")
'''


def test_one_revision_with_ensure_ops_for_sqlite_and_postgresql(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, integrity_database_url: str) -> None:
    """The example project that also runs on SQLite gains an ensure_* revision: it runs
    (and re-runs) on SQLite, and passes verify, re-run included, on PostgreSQL."""
    from alembic_integrity.verify import verify
    from test_projects import copy

    ini = copy("portable", tmp_path)
    (ini.parent / "migrations" / "versions" / "0003_title_check.py").write_text(PORTABLE_0003)
    models = ini.parent / "portable_app" / "models.py"
    models.write_text(models.read_text().replace(
        'server_default=sa.false()),\n)',
        'server_default=sa.false()),\n    sa.CheckConstraint("length(title) > 0", '
        'name="title_set"),\n)'))
    monkeypatch.chdir(ini.parent)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.syspath_prepend(str(ini.parent))
    config = Config(str(ini), stdout=io.StringIO())

    command.upgrade(config, "head")
    command.stamp(config, "0002")
    command.upgrade(config, "head")  # the re-run on SQLite
    engine = create_engine(f"sqlite:///{ini.parent / 'portable.db'}")
    checks = {c["name"] for c in inspect(engine).get_check_constraints("task")}
    engine.dispose()
    assert "ck_task_title_set" in checks, checks
    command.downgrade(config, "base")

    report = verify(ini, integrity_database_url, idempotent_since="0002", strict=True)
    assert report.exit_code == 0, [f"{s.name}: {s.message}" for s in report.failures]
    assert report.step("rerun", "0003").status == "passed"
