"""The pytest plugin, seen from a project: fixtures, the one-line switch, a failing revision.

Each case runs a small project's test suite with ``pytester`` (in process) over
a copy of the reference migrations. The inner runs reuse this session's server
through ``$ALEMBIC_INTEGRITY_TEST_URL``, so they start no server of their own.
"""

from __future__ import annotations

import pytest

# Imported here so they are in the sys.modules snapshot pytester restores after each in-process
# run: the reference env.py imports them, and they register renderers with Alembic only once.
import alembic_integrity.autogenerate
import alembic_integrity.demo.models  # noqa: F401
from alembic_integrity.demo.project import copy_project
from alembic_integrity.testing.pytest_plugin import TEST_URL_ENV

pytest_plugins = ["pytester"]

REVISIONS = ["0001", "0002", "0003", "0004", "0005"]
SWITCH = "[pytest]\nalembic_integrity_verify = true\n"

FIXTURE_TESTS = '''
def test_upgrade_and_downgrade(integrity_alembic):
    integrity_alembic.upgrade("0002")
    assert integrity_alembic.current() == ("0002",)
    integrity_alembic.upgrade("head")
    assert integrity_alembic.current() == ("0005",)
    integrity_alembic.downgrade("base")
    assert integrity_alembic.current() == ()


def test_runner_is_bound_to_a_fresh_database(integrity_alembic, integrity_database_url):
    assert integrity_alembic.url == integrity_database_url
    assert integrity_alembic.config.attributes["url"] == integrity_database_url
    assert integrity_alembic.current() == ()
'''

NOT_IDEMPOTENT = '''"""A plain add_column: the second run fails.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("run", sa.Column("note", sa.Text()))


def downgrade():
    op.drop_column("run", "note")
'''


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
            integrity_postgres_url: str) -> pytest.Pytester:
    """pytester's directory holding a copy of the reference Alembic project."""
    monkeypatch.setenv(TEST_URL_ENV, integrity_postgres_url)
    copy_project(pytester.path)
    return pytester


def generated(revisions: list[str]) -> set[str]:
    return {"test_single_head", "test_downgrade_then_upgrade", "test_no_drift",
            *(f"test_revision_is_idempotent[{r}]" for r in revisions)}


def test_fixtures_run_alembic_on_a_fresh_database(project: pytest.Pytester) -> None:
    project.makepyfile(test_inner_fixtures=FIXTURE_TESTS)
    result = project.runpytest("-q")
    result.assert_outcomes(passed=2)


def passed_lines(result: pytest.RunResult) -> set[str]:
    return {line.split(" PASSED")[0] for line in result.stdout.lines if " PASSED" in line}


def test_one_ini_line_adds_the_verify_checks(project: pytest.Pytester) -> None:
    project.makeini(SWITCH)
    project.makepyfile(test_inner_fixtures=FIXTURE_TESTS)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=2 + len(generated(REVISIONS)))
    assert passed_lines(result) >= {f"alembic.ini::TestAlembicMigrations::{name}"
                                    for name in generated(REVISIONS)}


def test_the_checks_join_a_suite_under_testpaths(project: pytest.Pytester) -> None:
    """alembic.ini is outside ``tests/``: the plugin adds the checks to the collected items."""
    project.makeini(SWITCH + "testpaths = tests\n")
    (project.path / "tests").mkdir()
    (project.path / "tests" / "test_inner_fixtures.py").write_text(FIXTURE_TESTS)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=2 + len(generated(REVISIONS)))
    assert "alembic.ini::TestAlembicMigrations::test_no_drift" in passed_lines(result)


def test_without_the_switch_nothing_is_generated(project: pytest.Pytester) -> None:
    project.makepyfile(test_inner_fixtures=FIXTURE_TESTS)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=2)
    assert "TestAlembicMigrations" not in result.stdout.str()


def test_a_non_idempotent_revision_fails_its_generated_test(project: pytest.Pytester) -> None:
    project.makeini(SWITCH)
    (project.path / "migrations" / "versions" / "0006_add_note.py").write_text(NOT_IDEMPOTENT)
    result = project.runpytest("-v")
    result.assert_outcomes(passed=len(generated(REVISIONS)), failed=1)
    out = result.stdout.str()
    assert "alembic.ini::TestAlembicMigrations::test_revision_is_idempotent[0006] FAILED" in out
    assert ('re-run 0006: revision 0006: PostgreSQL refused: column "note" of relation "run" '
            "already exists") in out
    assert "ALTER TABLE run ADD COLUMN note TEXT" in out
    assert "alembic.ini::TestAlembicMigrations::test_revision_is_idempotent[0005]" in \
        passed_lines(result)


def test_running_only_the_checks_with_the_ini_file_as_argument(project: pytest.Pytester) -> None:
    project.makeini(SWITCH)
    project.makepyfile(test_inner_fixtures=FIXTURE_TESTS)
    result = project.runpytest("alembic.ini", "-q", "-k", "idempotent")
    result.assert_outcomes(passed=len(REVISIONS))


def test_a_single_test_file_run_does_not_add_them(project: pytest.Pytester) -> None:
    project.makeini(SWITCH)
    project.makepyfile(test_inner_fixtures=FIXTURE_TESTS)
    result = project.runpytest("test_inner_fixtures.py", "-q")
    result.assert_outcomes(passed=2)


def test_importing_the_class_is_the_other_one_line_switch(project: pytest.Pytester) -> None:
    project.makepyfile(test_inner_verify_import=(
        "from alembic_integrity.testing.pytest_plugin import TestAlembicMigrations"
        "  # noqa: F401\n"))
    result = project.runpytest("-v")
    result.assert_outcomes(passed=len(generated(REVISIONS)))
    node = "test_inner_verify_import.py::TestAlembicMigrations"
    assert f"{node}::test_revision_is_idempotent[0003]" in passed_lines(result)
