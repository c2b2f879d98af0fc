"""``verify`` and ``alembic-integrity verify``: the reference project and small tmp projects."""

from __future__ import annotations

import json
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import create_engine

from alembic_integrity.cli import main
from alembic_integrity.errors import ConfigurationError
from alembic_integrity.verify import VerifyReport, junit_xml, verify

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_INI = ROOT / "alembic.ini"
REFERENCE_REVISIONS = ["0001", "0002", "0003", "0004", "0005"]

# A stock env.py: it reads sqlalchemy.url, which verify sets in memory.
ENV_PY = """\
from alembic import context
from sqlalchemy import create_engine, pool

import {models} as models

config = context.config
target_metadata = models.metadata


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
"""

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/migrations
prepend_sys_path = %(here)s
path_separator = os
"""

MODELS = """\
import sqlalchemy as sa

metadata = sa.MetaData()
t = sa.Table(
    "t", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("qty", sa.Integer),
    sa.Column("note", sa.Text),
    {extra}
)
"""

CREATE_T = """\
op.create_table("t", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("qty", sa.Integer), sa.Column("note", sa.Text), if_not_exists=True)"""
DROP_T = 'op.drop_table("t", if_exists=True)'
ENSURE_CHECK = 'op.ensure_check_constraint("ck_t_qty", "t", "qty >= 0")'
DROP_CHECK = 'op.ensure_constraint_dropped("ck_t_qty", "t")'
MODEL_CHECK = 'sa.CheckConstraint("qty >= 0", name="ck_t_qty"),'


@dataclass
class Revision:
    revision: str
    down: str | tuple[str, ...] | None
    upgrade: str
    downgrade: str = "pass"


def revision_source(rev: Revision) -> str:
    body = textwrap.indent(rev.upgrade, "    ")
    down = textwrap.indent(rev.downgrade, "    ")
    return (f"import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"import alembic_integrity  # noqa: F401\n\n"
            f"revision = {rev.revision!r}\ndown_revision = {rev.down!r}\n"
            f"branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{body}\n\n\ndef downgrade():\n{down}\n")


def make_project(root: Path, revisions: list[Revision], model_extra: str = MODEL_CHECK) -> Path:
    """A tiny Alembic project (stock env.py, a models module of its own); returns alembic.ini."""
    models = f"models_{uuid.uuid4().hex[:12]}"  # unique: sys.modules outlives the test
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY.format(models=models))
    (root / f"{models}.py").write_text(MODELS.format(extra=model_extra))
    for rev in revisions:
        (root / "migrations" / "versions" / f"{rev.revision}.py").write_text(revision_source(rev))
    (root / "alembic.ini").write_text(ALEMBIC_INI)
    return root / "alembic.ini"


def good_revisions() -> list[Revision]:
    return [Revision("r1", None, CREATE_T, DROP_T), Revision("r2", "r1", ENSURE_CHECK, DROP_CHECK)]


def failed(report: VerifyReport) -> list[str]:
    return [s.name for s in report.failures]


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args])
    return int(exit_info.value.code or 0)


# --------------------------------------------------------------------------- the reference project


@pytest.mark.parametrize("x_args", [(), ("transaction_per_migration=true",)],
                         ids=["one-transaction", "transaction-per-migration"])
def test_reference_project_passes(integrity_database_url: str, x_args: tuple[str, ...]) -> None:
    report = verify(REFERENCE_INI, integrity_database_url, x_args=x_args)
    assert report.ok, report.failures
    assert report.exit_code == 0
    assert report.heads == ["0005"]
    assert report.revisions == REFERENCE_REVISIONS
    assert [s.revision for s in report.steps if s.kind == "rerun"] == REFERENCE_REVISIONS
    assert [s.revision for s in report.steps if s.kind == "downgrade"] == \
        list(reversed(REFERENCE_REVISIONS))
    assert report.step("drift") is not None and report.step("drift").status == "passed"
    assert report.step("reupgrade") is not None


def test_cli_default_throwaway_server_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("-c", str(REFERENCE_INI)) == 0
    out = capsys.readouterr().out
    assert "✓ re-run 0005" in out and "verify OK" in out


def test_cli_json_format(integrity_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("-c", str(REFERENCE_INI), "--url", integrity_database_url,
                   "--format", "json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["exit_code"] == 0
    assert {s["kind"] for s in data["steps"]} == {"heads", "upgrade", "rerun", "downgrade",
                                                 "reupgrade", "drift"}


# --------------------------------------------------------------------------- idempotency


def test_plain_add_column_is_not_idempotent(tmp_path: Path, integrity_database_url: str) -> None:
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3", "r2", 'op.add_column("t", sa.Column("extra", sa.Integer()))',
                 'op.drop_column("t", "extra")'),
    ])
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["re-run r3"]
    step = report.step("rerun", "r3")
    assert step is not None
    assert step.message.startswith("revision r3: PostgreSQL refused:")
    assert 'column "extra" of relation "t" already exists' in step.message
    assert step.statement is not None and "ALTER TABLE t ADD COLUMN extra INTEGER" in step.statement
    # the run went on: downgrade, upgrade again and drift were still checked
    assert report.step("downgrade", "r1").status == "passed"
    assert report.step("drift").status == "passed"


INSERT_AGAIN = 'op.execute("INSERT INTO t (id, qty) SELECT count(*) + 1, 1 FROM t")'


def test_quiet_changes_on_rerun_are_found(tmp_path: Path, integrity_database_url: str) -> None:
    """No error on the second run, yet it re-created a constraint and inserted a row again."""
    recreate = ('op.execute("ALTER TABLE t DROP CONSTRAINT IF EXISTS ck_t_qty")\n'
                'op.execute("ALTER TABLE t ADD CONSTRAINT ck_t_qty CHECK (qty >= 0)")')
    ini = make_project(tmp_path, [
        Revision("r1", None, CREATE_T, DROP_T),
        Revision("r2", "r1", recreate, DROP_CHECK),
        Revision("r3", "r2", INSERT_AGAIN, 'op.execute("DELETE FROM t")'),
    ])
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["re-run r2", "re-run r3"]
    assert any("constraint public.t.ck_t_qty dropped and re-created (OID" in line
               for line in report.step("rerun", "r2").details)
    assert report.step("rerun", "r3").details == ["table public.t: 1 rows -> 2 rows"]


def test_failed_upgrade_stops_and_skips_the_rest(tmp_path: Path,
                                                 integrity_database_url: str) -> None:
    ini = make_project(tmp_path, [
        Revision("r1", None, CREATE_T, DROP_T),
        Revision("r2", "r1", 'op.execute("ALTER TABLE nowhere ADD COLUMN x int")'),
        Revision("r3", "r2", "pass"),
    ])
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["upgrade r2"]
    assert 'relation "nowhere" does not exist' in report.step("upgrade", "r2").message
    assert report.step("upgrade", "r3").status == "skipped"
    assert report.step("drift").status == "skipped"


# --------------------------------------------------------------------------- heads


def test_two_heads_are_listed_with_the_merge_command(tmp_path: Path,
                                                     integrity_database_url: str) -> None:
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3a", "r2", "pass"),
        Revision("r3b", "r2", "pass"),
    ])
    report = verify(ini, integrity_database_url)
    heads = report.step("heads")
    assert heads is not None and heads.status == "failed"
    assert "2 heads: r3a, r3b" in heads.message or "2 heads: r3b, r3a" in heads.message
    assert 'alembic merge -m "merge heads" r3' in heads.message
    assert report.exit_code == 1
    assert not any(s.kind == "upgrade" for s in report.steps)


# --------------------------------------------------------------------------- drift


def test_drift_model_check_differs_exit_1(tmp_path: Path, integrity_database_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ini = make_project(tmp_path, good_revisions(),
                       model_extra='sa.CheckConstraint("qty > 0", name="ck_t_qty"),')
    assert run_cli("-c", str(ini), "--url", integrity_database_url) == 1
    out = capsys.readouterr().out
    assert "✗ drift: models vs database" in out
    assert "CHECK ck_t_qty on t differs: models CHECK ((qty > 0)), database CHECK ((qty >= 0))" \
        in out


def test_drift_missing_not_null_and_foreign_key(tmp_path: Path,
                                                integrity_database_url: str) -> None:
    extra = ('sa.CheckConstraint("qty >= 0", name="ck_t_qty"),\n'
             '    sa.Column("parent_id", sa.Integer, sa.ForeignKey("t.id", name="fk_t_parent")),\n'
             '    sa.Column("code", sa.Text, nullable=False),')
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3", "r2", 'op.add_column("t", sa.Column("parent_id", sa.Integer), '
                             'if_not_exists=True)\n'
                             'op.add_column("t", sa.Column("code", sa.Text), if_not_exists=True)'),
    ], model_extra=extra)
    details = verify(ini, integrity_database_url).step("drift").details
    assert "t.code: the models declare NOT NULL, the database allows NULL" in details
    assert any(d.startswith("FOREIGN KEY fk_t_parent on t: missing in the database")
               for d in details)


def test_extra_database_constraint_warns_unless_strict(tmp_path: Path,
                                                       integrity_postgres_url: str) -> None:
    from alembic_integrity.testing.pytest_plugin import fresh_database

    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3", "r2", 'op.ensure_check_constraint("ck_t_note", "t", "note <> \'\'")',
                 'op.ensure_constraint_dropped("ck_t_note", "t")'),
    ])
    with fresh_database(integrity_postgres_url) as url:
        lenient = verify(ini, url)
    assert lenient.ok
    assert any("CHECK ck_t_note on t: in the database, not in the models" in w
               for w in lenient.step("drift").warnings)
    with fresh_database(integrity_postgres_url) as url:
        strict = verify(ini, url, strict=True)
    assert failed(strict) == ["drift: models vs database"]
    assert any("ck_t_note" in d for d in strict.step("drift").details)


# --------------------------------------------------------------------------- data


def backfilled_revisions(backfill: bool) -> list[Revision]:
    fill = 'op.execute("UPDATE t SET note = \'\' WHERE note IS NULL")\n' if backfill else ""
    return [
        *good_revisions(),
        Revision("r3", "r2", fill + 'op.ensure_not_null("t", "note")',
                 'op.ensure_nullable("t", "note")'),
    ]


def test_with_data_sql_file(tmp_path: Path, integrity_postgres_url: str) -> None:
    models = 'sa.CheckConstraint("qty >= 0", name="ck_t_qty"),'
    data = tmp_path / "seed.sql"
    data.write_text("INSERT INTO t (id, qty, note) VALUES (1, 5, NULL);\n"
                    "INSERT INTO t (id, qty, note) VALUES (2, 7, '100%');\n")
    good = make_project(tmp_path / "good", backfilled_revisions(True), models)
    with _fresh(integrity_postgres_url) as url:
        report = verify(good, url, data=data, data_at="r2", skip_drift=True)
    assert report.ok, report.failures
    assert [s.name for s in report.steps if s.kind == "data"] == ["load seed.sql at r2"]
    bad = make_project(tmp_path / "bad", backfilled_revisions(False), models)
    with _fresh(integrity_postgres_url) as url:
        report = verify(bad, url, data=str(data), data_at="r2", skip_drift=True)
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
        engine.dispose()
    assert failed(report) == ["upgrade r3"]
    assert "revision r3:" in report.step("upgrade", "r3").message
    assert "note" in report.step("upgrade", "r3").message
    assert rows == 2


def test_with_data_callable(tmp_path: Path, integrity_database_url: str) -> None:
    seen: list[int] = []

    def seed(conn: object) -> None:
        conn.exec_driver_sql("INSERT INTO t (id, qty) VALUES (1, 1)")  # type: ignore[attr-defined]
        seen.append(1)

    ini = make_project(tmp_path, backfilled_revisions(True))
    report = verify(ini, integrity_database_url, data=seed, data_at="r1")
    assert report.ok, report.failures
    assert seen == [1, 1]  # the first upgrade, and the upgrade after the downgrade


def test_with_data_needs_data_at() -> None:
    with pytest.raises(ConfigurationError, match="go together"):
        verify(REFERENCE_INI, "postgresql+psycopg://nobody@127.0.0.1:1/x", data="seed.sql")


# --------------------------------------------------------------------------- output and exit codes


def test_junit_xml_has_one_testcase_per_step(tmp_path: Path, integrity_database_url: str) -> None:
    ini = make_project(tmp_path / "p", [
        *good_revisions(),
        Revision("r3", "r2", 'op.add_column("t", sa.Column("extra", sa.Integer()))',
                 'op.drop_column("t", "extra")'),
    ])
    out = tmp_path / "verify.xml"
    assert run_cli("-c", str(ini), "--url", integrity_database_url, "--junit-xml", str(out)) == 1
    suite = ElementTree.parse(out).getroot().find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "1"
    failures = [(c.get("name"), c.find("failure")) for c in cases if c.find("failure") is not None]
    assert [name for name, _ in failures] == ["re-run r3"]
    failure = failures[0][1]
    assert failure is not None and "revision r3" in failure.get("message", "")
    assert "ALTER TABLE t ADD COLUMN extra" in (failure.text or "")
    assert {c.get("name") for c in cases} >= {"single head", "upgrade r1", "re-run r1",
                                              "downgrade r1", "drift: models vs database"}


def test_junit_xml_of_a_passing_report() -> None:
    report = VerifyReport("alembic.ini")
    root = ElementTree.fromstring(junit_xml(report).split("?>", 1)[1])
    assert root.find("testsuite").get("failures") == "0"


def test_cli_exit_1_names_the_revision(tmp_path: Path, integrity_database_url: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3", "r2", 'op.add_column("t", sa.Column("extra", sa.Integer()))'),
    ])
    assert run_cli("-c", str(ini), "--url", integrity_database_url) == 1
    out = capsys.readouterr().out
    assert "✗ re-run r3" in out
    assert "statement: ALTER TABLE t ADD COLUMN extra INTEGER" in out
    assert "verify FAILED" in out


def test_cli_exit_2_on_configuration_errors(tmp_path: Path, integrity_database_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("-c", str(tmp_path / "missing.ini")) == 2
    assert "no Alembic config at" in capsys.readouterr().err
    assert run_cli("-c", str(REFERENCE_INI), "--with-data", "seed.sql") == 2
    assert run_cli("-c", str(REFERENCE_INI), "--format", "yaml") == 2  # click usage error
    assert run_cli("-c", str(REFERENCE_INI), "--metadata", "no_such_module:metadata") == 2


def test_cli_exit_2_on_a_database_that_is_not_empty(integrity_database_url: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with create_engine(integrity_database_url).begin() as conn:
        conn.exec_driver_sql("CREATE TABLE precious (id int)")
    assert run_cli("-c", str(REFERENCE_INI), "--url", integrity_database_url) == 2
    err = capsys.readouterr().err
    assert "is not empty (public.precious)" in err
    with create_engine(integrity_database_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('run')").scalar() is None


def test_env_py_that_connects_elsewhere_is_stopped(tmp_path: Path, integrity_postgres_url: str,
                                                   integrity_database_url: str) -> None:
    """An env.py with its own hard-wired URL must not get its database downgraded."""
    ini = make_project(tmp_path, good_revisions())
    env = tmp_path / "migrations" / "env.py"
    env.write_text(env.read_text().replace('config.get_main_option("sqlalchemy.url")',
                                           repr(integrity_postgres_url)))
    with pytest.raises(ConfigurationError, match=r"env\.py connected to another database"):
        verify(ini, integrity_database_url)
    with create_engine(integrity_postgres_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT to_regclass('t')").scalar() is None


def _fresh(server_url: str):  # type: ignore[no-untyped-def]
    from alembic_integrity.testing.pytest_plugin import fresh_database

    return fresh_database(server_url)


# --------------------------------------------------------------------------- history shapes


def test_branches_and_a_merge(tmp_path: Path, integrity_database_url: str) -> None:
    """Re-running a merge stamps back to both parents; the downgrade then runs in one go."""
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3a", "r2", 'op.create_index("ix_t_qty", "t", ["qty"], if_not_exists=True)',
                 'op.drop_index("ix_t_qty", "t", if_exists=True)'),
        Revision("r3b", "r2", 'op.create_index("ix_t_note", "t", ["note"], if_not_exists=True)',
                 'op.drop_index("ix_t_note", "t", if_exists=True)'),
        Revision("r4", ("r3a", "r3b"), "pass"),
    ])
    report = verify(ini, integrity_database_url)
    assert report.ok, report.failures
    assert {s.revision for s in report.steps if s.kind == "rerun"} == {"r1", "r2", "r3a", "r3b",
                                                                      "r4"}
    assert [s.name for s in report.steps if s.kind == "downgrade"] == ["downgrade to base"]


def test_what_the_downgrades_leave_behind_is_a_warning(tmp_path: Path,
                                                      integrity_database_url: str) -> None:
    ini = make_project(tmp_path, [
        *good_revisions(),
        Revision("r3", "r2", 'op.execute("CREATE SCHEMA IF NOT EXISTS reports")'),
    ])
    report = verify(ini, integrity_database_url)
    assert report.ok, report.failures
    assert report.step("downgrade", "r1").warnings == [
        "left after downgrade to base: schema reports added"]


def test_data_source_specs() -> None:
    from alembic_integrity.verify import load_data_source

    assert load_data_source("json:loads") is json.loads
    with pytest.raises(ConfigurationError, match="not callable"):
        load_data_source("json:__doc__")
    with pytest.raises(ConfigurationError, match=r"expected a \.sql file"):
        load_data_source("seed")
    with pytest.raises(ConfigurationError, match="no such file"):
        load_data_source("missing.sql")


# ------------------------------------------------------------------ env.py's own transaction

EXTERNAL_TRANSACTION = ENV_PY.replace(
    "        context.configure(connection=connection, target_metadata=target_metadata)\n"
    "        with context.begin_transaction():\n"
    "            context.run_migrations()\n",
    "        with connection.begin():  # env.py's own transaction, not Alembic's\n"
    "            context.configure(connection=connection, target_metadata=target_metadata)\n"
    "            with context.begin_transaction():\n"
    "                context.run_migrations()\n")


def test_env_py_own_transaction_one_revision_per_command(tmp_path: Path,
                                                         integrity_database_url: str) -> None:
    """Nothing can be committed between revisions: each gets its own env.py run, same checks."""
    assert EXTERNAL_TRANSACTION != ENV_PY
    ini = make_project(tmp_path, [
        Revision("r1", None, CREATE_T, DROP_T),
        Revision("r2", "r1", 'op.create_index("ix_t_qty", "t", ["qty"], if_not_exists=True)',
                 'op.drop_index("ix_t_qty", "t", if_exists=True)'),
        Revision("r3", "r2", INSERT_AGAIN, 'op.execute("DELETE FROM t")'),
    ], model_extra="")
    (tmp_path / "migrations" / "env.py").write_text(
        EXTERNAL_TRANSACTION.format(models=next(tmp_path.glob("models_*.py")).stem))
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["re-run r3"]
    assert report.step("rerun", "r3").details == ["table public.t: 1 rows -> 2 rows"]
    assert report.step("drift").status == "passed"


def test_ensure_ops_refuse_env_py_own_transaction(tmp_path: Path,
                                                  integrity_database_url: str) -> None:
    ini = make_project(tmp_path, good_revisions())
    (tmp_path / "migrations" / "env.py").write_text(
        EXTERNAL_TRANSACTION.format(models=next(tmp_path.glob("models_*.py")).stem))
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["upgrade r2"]
    assert "inside a transaction that env.py opened itself" in report.step("upgrade", "r2").message


def test_update_again_without_ddl_is_found_by_row_counts(tmp_path: Path,
                                                         integrity_database_url: str) -> None:
    """A data migration that inserts on every run, in the middle of a batch of revisions."""
    ini = make_project(tmp_path, [
        Revision("r1", None, CREATE_T, DROP_T),
        Revision("r2", "r1", 'op.execute("INSERT INTO t (id, qty) VALUES (1, 1), (2, 2)")',
                 'op.execute("DELETE FROM t")'),
        Revision("r3", "r2", 'op.execute("INSERT INTO t (id, qty) SELECT max(id) + 1, 0 FROM t")',
                 'op.execute("DELETE FROM t WHERE qty = 0")'),
        Revision("r4", "r3", 'op.execute("UPDATE t SET note = \'x\' WHERE note IS NULL")'),
        Revision("r5", "r4", ENSURE_CHECK, DROP_CHECK),
    ])
    report = verify(ini, integrity_database_url)
    assert failed(report) == ["re-run r2", "re-run r3"]
    assert "duplicate key" in report.step("rerun", "r2").message
    assert report.step("rerun", "r3").details == ["table public.t: 3 rows -> 4 rows"]
    assert report.step("rerun", "r5").status == "passed"


def test_without_superuser_every_snapshot_is_read_whole(tmp_path: Path,
                                                        integrity_postgres_url: str) -> None:
    """No event trigger can be made: the same findings, from full reads."""
    from sqlalchemy import make_url

    name = f"plain_{uuid.uuid4().hex[:8]}"
    admin = create_engine(integrity_postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        conn.exec_driver_sql(f"CREATE DATABASE {name} OWNER {name}")
    try:
        url = make_url(integrity_postgres_url).set(username=name, database=name)
        recreate = ('op.execute("ALTER TABLE t DROP CONSTRAINT IF EXISTS ck_t_qty")\n'
                    'op.execute("ALTER TABLE t ADD CONSTRAINT ck_t_qty CHECK (qty >= 0)")')
        ini = make_project(tmp_path, [
            Revision("r1", None, CREATE_T, DROP_T),
            Revision("r2", "r1", recreate, DROP_CHECK),
            Revision("r3", "r2", INSERT_AGAIN, 'op.execute("DELETE FROM t")'),
        ])
        report = verify(ini, url.render_as_string(hide_password=False))
        assert failed(report) == ["re-run r2", "re-run r3"]
        assert report.step("rerun", "r3").details == ["table public.t: 1 rows -> 2 rows"]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        admin.dispose()


def test_the_event_triggers_are_removed_after_a_run(integrity_database_url: str) -> None:
    assert verify(REFERENCE_INI, integrity_database_url).ok
    engine = create_engine(integrity_database_url)
    with engine.connect() as conn:
        left = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM pg_event_trigger), "
            "(SELECT count(*) FROM pg_namespace WHERE nspname = 'alembic_integrity_verify')").one()
    engine.dispose()
    assert tuple(left) == (0, 0)
