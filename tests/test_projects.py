"""verify on the example projects of tests/projects/: the shapes real Alembic projects have.

Each test copies a project into a temporary folder (verify --set-baseline writes
to alembic.ini) and runs verify through the library, the CLI or the pytest
plugin, on a real PostgreSQL.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from alembic_integrity.cli import main
from alembic_integrity.errors import ConfigurationError
from alembic_integrity.settings import resolve
from alembic_integrity.testing.pytest_plugin import TEST_URL_ENV
from alembic_integrity.verify import VerifyReport, verify
from alembic_integrity.verify.baseline import write_baseline

pytest_plugins = ["pytester"]

PROJECTS = Path(__file__).resolve().parent / "projects"
APPS = {"shop_app", "legacy_app", "brittle_app", "portable_app"}
NOWHERE = "postgresql://nobody:secret@127.0.0.1:1/elsewhere"


@pytest.fixture(autouse=True)
def forget_project_modules() -> Iterator[None]:
    """Each test imports a project's modules afresh (settings read at import included)."""
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in APPS]:
        del sys.modules[name]


def copy(name: str, dest: Path) -> Path:
    """A copy of tests/projects/<name> under ``dest``; returns its alembic.ini."""
    target = dest / name
    shutil.copytree(PROJECTS / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target / "alembic.ini"


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args])
    return int(exit_info.value.code or 0)


def failed(report: VerifyReport) -> list[str]:
    return [s.name for s in report.failures]


# --------------------------------------------------------------------------- shop


def test_shop_passes_with_its_baseline(tmp_path: Path, integrity_database_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings env.py, enums, batch ops, ORM and SQL data migrations: exit 0.

    A DATABASE_URL in the shell pointing elsewhere must not matter: verify sets
    its own before env.py (and the settings it imports) is read.
    """
    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    report = verify(copy("shop", tmp_path), integrity_database_url)
    assert report.ok, [(s.name, s.message) for s in report.failures]
    assert report.idempotent_since == "0005"
    for revision in ("0001", "0002", "0003", "0004", "0005"):
        rerun = report.step("rerun", revision)
        assert rerun is not None and rerun.status == "skipped"
        assert rerun.message == ("re-run not required: at or before the baseline "
                                 "idempotent_since = 0005 (alembic.ini [alembic_integrity])")
    assert report.step("rerun", "0006").status == "passed"
    assert report.step("upgrade", "0001").status == "passed"
    assert "5 re-runs not required" in report.summary()
    assert os.environ["DATABASE_URL"] == NOWHERE  # put back after the run


def test_shop_without_baseline_fails_its_plain_revisions(tmp_path: Path,
                                                         integrity_database_url: str) -> None:
    """Without the baseline every revision must re-run: plain create_table cannot."""
    report = verify(copy("shop", tmp_path), integrity_database_url, idempotent_since="base")
    assert report.exit_code == 1
    assert {"re-run 0001", "re-run 0002", "re-run 0005"} <= set(failed(report))
    assert "already exists" in report.step("rerun", "0001").message
    assert report.step("rerun", "0006").status == "passed"


def test_shop_unnamed_foreign_keys_are_no_drift_even_strict(tmp_path: Path,
                                                            integrity_database_url: str) -> None:
    """The models' own unnamed FKs are not 'extra' (needs structural FK matching, issue 9)."""
    report = verify(copy("shop", tmp_path), integrity_database_url, strict=True)
    drift = report.step("drift")
    assert drift is not None and drift.status == "passed", drift.details


def test_shop_through_the_pytest_plugin(pytester: pytest.Pytester, integrity_postgres_url: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin reads the same baseline; the exempt re-runs pass as tests."""
    ini = copy("shop", pytester.path)
    pytester.makeini(f"[pytest]\nalembic_integrity_verify = true\n"
                     f"alembic_integrity_config = {ini.relative_to(pytester.path)}\n")
    monkeypatch.setenv(TEST_URL_ENV, integrity_postgres_url)
    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)  # head, 6 revisions, downgrade/upgrade, drift


def test_plugin_baseline_from_the_pytest_ini(pytester: pytest.Pytester,
                                            integrity_postgres_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """alembic_integrity_idempotent_since: the baseline without touching alembic.ini."""
    ini = copy("portable", pytester.path)
    pytester.makeini(f"[pytest]\nalembic_integrity_verify = true\n"
                     f"alembic_integrity_config = {ini.relative_to(pytester.path)}\n"
                     "alembic_integrity_idempotent_since = 0002\n")
    monkeypatch.setenv(TEST_URL_ENV, integrity_postgres_url)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)  # head, 2 revisions, downgrade/upgrade, drift


# --------------------------------------------------------------------------- legacy


LEGACY_ARGS = ("--metadata", "legacy_app.models:metadata",
               "--base-callable", "legacy_app.schema:create_all")


def test_legacy_from_its_own_folder(tmp_path: Path, integrity_database_url: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Placeholder sqlalchemy.url = "", create_all before 0001, --metadata from the cwd."""
    ini = copy("legacy", tmp_path)
    monkeypatch.chdir(ini.parent)
    assert run_cli("--url", integrity_database_url, *LEGACY_ARGS) == 0
    # the console script (its sys.path starts with bin/, not the cwd) finds them too
    script = Path(sys.executable).parent / "alembic-integrity"
    audit = subprocess.run([str(script), "audit", "--url", integrity_database_url,
                            "--metadata", "legacy_app.models:metadata"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_legacy_from_elsewhere_with_base_sql(tmp_path: Path, integrity_database_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--metadata resolves from the project root (alembic.ini's folder) too."""
    ini = copy("legacy", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    report = verify(ini, integrity_database_url, metadata="legacy_app.models:metadata",
                    base=ini.parent / "base.sql")
    assert report.ok, [(s.name, s.message) for s in report.failures]
    assert [s.name for s in report.steps][:2] == ["single head", "base schema: base.sql"]


def test_legacy_markers_override_the_baseline(tmp_path: Path,
                                              integrity_database_url: str) -> None:
    """idempotent = False skips a re-run; idempotent = True checks it even before the baseline."""
    ini = copy("legacy", tmp_path)
    report = verify(ini, integrity_database_url, metadata="legacy_app.models:metadata",
                    base="legacy_app.schema:create_all", idempotent_since="0003")
    assert report.ok, [(s.name, s.message) for s in report.failures]
    assert report.step("rerun", "0001").message == \
        "re-run not required: the revision file sets idempotent = False"
    assert report.step("rerun", "0002").status == "skipped"  # before the baseline
    assert report.step("rerun", "0003").status == "passed"  # idempotent = True wins


def test_legacy_without_its_base_schema(tmp_path: Path, integrity_database_url: str) -> None:
    """What --base-* is for: 0001 alters a table no revision creates."""
    report = verify(copy("legacy", tmp_path), integrity_database_url,
                    metadata="legacy_app.models:metadata")
    assert failed(report) == ["upgrade 0001"]
    assert 'relation "book" does not exist' in report.step("upgrade", "0001").message


def test_input_errors_name_the_cli_option(tmp_path: Path, integrity_database_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ini = str(copy("legacy", tmp_path))
    base = ("--base-callable", "legacy_app.schema:create_all")
    assert run_cli("-c", ini, "--url", integrity_database_url, *base) == 2
    err = capsys.readouterr().err
    assert "env.py passes no single target_metadata" in err
    assert "pass --metadata MODULE:ATTR or --skip-drift" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run_cli("-c", ini, "--url", integrity_database_url, "--metadata",
                   "legacy_app.nothing:metadata", *base) == 2
    err = capsys.readouterr().err
    assert "metadata 'legacy_app.nothing:metadata': importing legacy_app.nothing failed" in err
    assert "pass --metadata MODULE:ATTR" in err
    assert run_cli("-c", ini, "--url", integrity_database_url, "--skip-drift",
                   "--base-callable", "legacy_app.schema:missing") == 2
    err = capsys.readouterr().err
    assert "base schema 'legacy_app.schema:missing'" in err
    assert "pass --base-sql FILE or --base-callable MODULE:FUNCTION" in err
    assert run_cli("-c", ini, "--url", integrity_database_url, "--skip-drift",
                   "--idempotent-since", "nope", *base) == 2
    assert "idempotent_since = nope" in capsys.readouterr().err
    assert run_cli("-c", ini, "--url", integrity_database_url, "--skip-drift",
                   "--with-data", "json:loads", "--data-at", "nope", *base) == 2
    err = capsys.readouterr().err
    assert "the revision to load the data set at: revision 'nope'" in err
    assert "pass --with-data with --data-at REVISION" in err


def test_input_errors_name_the_ini_key_in_the_plugin(pytester: pytest.Pytester,
                                                     integrity_postgres_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ini = copy("legacy", pytester.path)
    pytester.makeini(f"[pytest]\nalembic_integrity_verify = true\n"
                     f"alembic_integrity_config = {ini.relative_to(pytester.path)}\n"
                     "alembic_integrity_base = legacy_app.schema:create_all\n")
    monkeypatch.setenv(TEST_URL_ENV, integrity_postgres_url)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert "set alembic_integrity_metadata = module:attr or alembic_integrity_skip_drift = " \
           "true in the pytest configuration" in out
    assert "Traceback" not in out and "verify_command" not in out
    assert "--metadata" not in out


# --------------------------------------------------------------------------- brittle


def test_brittle_downgrade_fails_and_drift_is_still_reported(
        tmp_path: Path, integrity_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    ini = copy("brittle", tmp_path)
    assert run_cli("-c", str(ini), "--url", integrity_database_url) == 1
    out = capsys.readouterr().out
    assert "✗ downgrade 0002" in out
    assert 'revision 0002: PostgreSQL refused: column "closed_on" of relation "account" does ' \
           "not exist" in out
    assert "✗ drift: models vs database" in out
    assert "account.name: the models declare NOT NULL, the database allows NULL" in out
    assert "not run: the downgrade failed" in out


def test_brittle_report_steps(tmp_path: Path, integrity_database_url: str) -> None:
    report = verify(copy("brittle", tmp_path), integrity_database_url)
    assert failed(report) == ["drift: models vs database", "downgrade 0002"]
    assert report.step("reupgrade").status == "skipped"
    assert report.step("downgrade", "0001") is None  # after 0002's failure: not attempted


# --------------------------------------------------------------------------- portable


def test_portable_runs_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ini = copy("portable", tmp_path)
    monkeypatch.chdir(ini.parent)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.syspath_prepend(str(ini.parent))  # what prepend_sys_path = . gives a fresh shell
    config = Config(str(ini))
    command.upgrade(config, "head")
    engine = create_engine(f"sqlite:///{ini.parent / 'portable.db'}")
    with engine.connect() as conn:
        fks = inspect(conn).get_foreign_keys("task")
        conn.exec_driver_sql("INSERT INTO project (name) VALUES ('p')")
    engine.dispose()
    assert [fk["name"] for fk in fks] == ["fk_task_project_id_project"]
    command.downgrade(config, "base")
    command.upgrade(config, "head")


def test_portable_set_baseline_then_a_new_revision_must_rerun(
        tmp_path: Path, integrity_postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Day one: --set-baseline records head and verify exits 0; the next revision is checked."""
    from alembic_integrity.testing.pytest_plugin import fresh_database

    ini = copy("portable", tmp_path)
    with fresh_database(integrity_postgres_url) as url:
        assert run_cli("-c", str(ini), "--url", url, "--set-baseline") == 0
    assert "recorded idempotent_since = 0002" in capsys.readouterr().out
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    assert parser.get("alembic_integrity", "idempotent_since") == "0002"
    assert parser.get("alembic", "sqlalchemy.url") == "sqlite:///portable.db"  # kept
    (ini.parent / "migrations" / "versions" / "0003_task_note.py").write_text(textwrap.dedent('''\
        import sqlalchemy as sa
        from alembic import op

        revision = "0003"
        down_revision = "0002"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.add_column("task", sa.Column("note", sa.Text))


        def downgrade():
            op.drop_column("task", "note")
        '''))
    with fresh_database(integrity_postgres_url) as url:
        assert run_cli("-c", str(ini), "--url", url) == 1
    out = capsys.readouterr().out
    assert "✗ re-run 0003" in out and 'column "note" of relation "task" already exists' in out


def test_env_py_reading_another_variable(tmp_path: Path, integrity_postgres_url: str) -> None:
    """An env.py that reads PORTABLE_DB: the error says so; --url-env sets it for the run."""
    from alembic_integrity.testing.pytest_plugin import fresh_database

    ini = copy("portable", tmp_path)
    env = ini.parent / "migrations" / "env.py"
    env.write_text(env.read_text().replace(
        'return (config.attributes.get("url") or os.environ.get("DATABASE_URL")\n'
        '            or config.get_main_option("sqlalchemy.url") or "")',
        'return os.environ["PORTABLE_DB"]'))
    with fresh_database(integrity_postgres_url) as url, \
            pytest.raises(ConfigurationError) as info:
        verify(ini, url, idempotent_since="0002")
    assert "KeyError: 'PORTABLE_DB'" in str(info.value)
    assert "--url-env NAME (the variable env.py reads its URL from)" in str(info.value)
    assert "PORTABLE_DB" not in os.environ
    with fresh_database(integrity_postgres_url) as url:
        report = verify(ini, url, idempotent_since="0002", url_env=["PORTABLE_DB"])
    assert report.ok, [(s.name, s.message) for s in report.failures]
    assert "PORTABLE_DB" not in os.environ


def test_placeholder_url_when_other_commands_read_env_py(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """audit / repair read target_metadata offline too: a placeholder URL is no URL."""
    from alembic_integrity.rules.metadata import metadata_from_alembic

    ini = copy("brittle", tmp_path)
    ini.write_text(ini.read_text().replace("sqlalchemy.url =", 'sqlalchemy.url = ""'))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.syspath_prepend(str(ini.parent))
    assert "account" in metadata_from_alembic(str(ini)).tables


# --------------------------------------------------------------------------- the baseline line


def test_write_baseline_edits_only_its_line(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n\n"
                   "[alembic_integrity]\n# keep me\nlock_timeout = 2s\n\n[loggers]\nkeys = root\n")
    write_baseline(ini, "abc123")
    write_baseline(ini, "def456")
    text = ini.read_text()
    assert text.count("idempotent_since") == 1 and "idempotent_since = def456" in text
    assert "# keep me\nlock_timeout = 2s" in text and text.endswith("[loggers]\nkeys = root\n")
    # the operations' settings ignore the key that verify reads
    assert resolve(Config(str(ini))).lock_timeout_ms == 2000
    bare = tmp_path / "bare.ini"
    bare.write_text("[alembic]\nscript_location = x")
    write_baseline(bare, "abc123")
    assert bare.read_text().startswith("[alembic]\nscript_location = x\n\n[alembic_integrity]\n")


def test_set_baseline_needs_one_head(tmp_path: Path) -> None:
    from alembic_integrity.verify import record_baseline

    ini = copy("brittle", tmp_path)
    branch = ini.parent / "migrations" / "versions" / "0002b_other.py"
    branch.write_text('revision = "0002b"\ndown_revision = "0001"\nbranch_labels = None\n'
                      "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\n"
                      "def downgrade():\n    pass\n")
    with pytest.raises(ConfigurationError, match="needs exactly one head, the project has 2"):
        record_baseline(ini)
