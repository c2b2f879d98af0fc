"""pytest fixtures and generated tests for a project's Alembic migrations on real PostgreSQL.

Fixtures (always available once the package is installed):

* ``integrity_postgres_url``: one server for the whole session (or the one in
  ``$ALEMBIC_INTEGRITY_TEST_URL``), started from local binaries or in Docker
  (testcontainers), whichever the machine has; no change to the tests either way;
* ``integrity_database_url``: a fresh, empty database on it per test, dropped
  afterwards, so tests cannot see each other;
* ``integrity_alembic``: an Alembic runner bound to such a fresh database
  (``.upgrade(rev)``, ``.downgrade(rev)``, ``.stamp(revs)``, ``.current()``,
  ``.config``, ``.url``), for tests of your own around the migrations;
* ``integrity_verify_report``: the :class:`~alembic_integrity.verify.VerifyReport`
  of ONE ``verify`` run per session, on a fresh database.

The checks of ``alembic-integrity verify`` as tests, switched on with ONE line
in pytest.ini / tox.ini (``[pytest]``), setup.cfg (``[tool:pytest]``) or
pyproject.toml (``[tool.pytest.ini_options]``)::

    alembic_integrity_verify = true

pytest then also collects, under the node ``alembic.ini``:
``test_single_head``, ``test_revision_is_idempotent[<revision>]`` (one per
revision: it upgrades and, run again, changes nothing), ``test_downgrade_then_upgrade``
and ``test_no_drift``. They appear in runs over directories (``pytest``,
``pytest tests/``) and with ``pytest alembic.ini``, not when you run single
test files. Instead of the ini line you may import the class into any test
module: ``from alembic_integrity.testing.pytest_plugin import TestAlembicMigrations  # noqa: F401``.

Settings (ini): ``alembic_integrity_config`` (default ``alembic.ini``, relative
to the rootdir), ``alembic_integrity_metadata`` (``module:attr``; default
env.py's ``target_metadata``), ``alembic_integrity_strict``,
``alembic_integrity_data`` and ``alembic_integrity_data_at`` (see ``verify
--with-data``), ``alembic_integrity_base`` (``verify --base-sql`` /
``--base-callable``), ``alembic_integrity_idempotent_since`` (the re-run
baseline; default ``idempotent_since`` in alembic.ini),
``alembic_integrity_skip_drift`` and ``alembic_integrity_url_env`` (variables
besides ``DATABASE_URL`` that get the URL). env.py must take its URL from
``config.attributes["url"]``, ``DATABASE_URL`` or ``sqlalchemy.url``. A bad
setting fails the tests with one line naming the ini key, no traceback.

If no server can be started the fixtures fail loudly: a skipped integrity test
would look like a passing one. Loaded for every pytest run in an environment
where the package is installed (``pytest11`` entry point), so importing this
module must stay cheap: everything heavy is imported inside the fixtures.
"""

from __future__ import annotations

import os
import types
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..verify import AlembicRunner, Step, VerifyReport

TEST_URL_ENV = "ALEMBIC_INTEGRITY_TEST_URL"
VERIFY_INI = "alembic_integrity_verify"
CONFIG_INI = "alembic_integrity_config"
METADATA_INI = "alembic_integrity_metadata"
STRICT_INI = "alembic_integrity_strict"
DATA_INI = "alembic_integrity_data"
DATA_AT_INI = "alembic_integrity_data_at"
BASE_INI = "alembic_integrity_base"
BASELINE_INI = "alembic_integrity_idempotent_since"
SKIP_DRIFT_INI = "alembic_integrity_skip_drift"
URL_ENV_INI = "alembic_integrity_url_env"

# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(VERIFY_INI, "Collect the alembic-integrity verify checks as tests.",
                  type="bool", default=False)
    parser.addini(CONFIG_INI, "Alembic config of the project, relative to the rootdir.",
                  default="alembic.ini")
    parser.addini(METADATA_INI, "module:attr of the models' MetaData (default: env.py's "
                  "target_metadata).", default="")
    parser.addini(STRICT_INI, "Constraints the models lack fail test_no_drift.",
                  type="bool", default=False)
    parser.addini(DATA_INI, "A .sql file or module:function loaded during verify.", default="")
    parser.addini(DATA_AT_INI, "The revision after which alembic_integrity_data is loaded.",
                  default="")
    parser.addini(BASE_INI, "A .sql file or module:function run on the empty database before "
                  "the first revision (what the project creates outside Alembic).", default="")
    parser.addini(BASELINE_INI, "Re-run baseline: this revision and its ancestors need not "
                  "survive a re-run (default: idempotent_since in alembic.ini).", default="")
    parser.addini(SKIP_DRIFT_INI, "Do not compare the models with the database.",
                  type="bool", default=False)
    parser.addini(URL_ENV_INI, "Environment variables besides DATABASE_URL that get the "
                  "verify run's URL (for an env.py that reads another one).", type="args",
                  default=[])
    parser.addoption("--integrity-verify", action="store_true", default=False,
                     help="Collect the alembic-integrity verify checks as tests (like the "
                          f"ini option {VERIFY_INI} = true).")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--integrity-verify") or config.getini(VERIFY_INI))


def alembic_config_path(config: pytest.Config) -> Path:
    """The project's alembic.ini: the ini option, relative to the rootdir."""
    value = str(config.getini(CONFIG_INI) or "alembic.ini")
    path = Path(value)
    return path if path.is_absolute() else config.rootpath / path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def integrity_postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL superuser connection shared by the session's tests."""
    existing = os.environ.get(TEST_URL_ENV)
    if existing:
        yield existing
        return
    from ..pg.throwaway import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


@contextmanager
def fresh_database(server_url: str, prefix: str = "test") -> Iterator[str]:
    """URL of a new empty database (``<prefix>_<hex>``) on the server, dropped with FORCE."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    server = sa.make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            _require_drop_force(conn)
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


MIN_SERVER_VERSION_NUM = 130000


def _require_drop_force(conn: sa.Connection) -> None:
    """The databases are dropped ``WITH (FORCE)``, which PostgreSQL 13 introduced."""
    import sqlalchemy as sa

    from ..errors import ConfigurationError

    number = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
    if number < MIN_SERVER_VERSION_NUM:
        raise ConfigurationError(
            f"the test server is PostgreSQL {number // 10000}; alembic-integrity's fixtures "
            "need 13 or newer (they drop databases WITH (FORCE))")


@pytest.fixture
def integrity_database_url(integrity_postgres_url: str) -> Iterator[str]:
    """URL of a new empty database (``test_<hex>``), dropped with ``FORCE`` after the test."""
    with fresh_database(integrity_postgres_url) as url:
        yield url


@pytest.fixture(scope="session")
def integrity_alembic_config(pytestconfig: pytest.Config) -> Path:
    """Path of the project's alembic.ini; override this fixture to point elsewhere."""
    return alembic_config_path(pytestconfig)


@pytest.fixture
def integrity_alembic(integrity_alembic_config: Path,
                      integrity_database_url: str) -> Iterator[AlembicRunner]:
    """Alembic bound to a fresh database: ``.upgrade(rev)``, ``.downgrade(rev)``, ``.config``."""
    from ..verify import AlembicRunner

    with AlembicRunner(integrity_alembic_config, integrity_database_url) as runner:
        yield runner


@pytest.fixture(scope="session")
def integrity_verify_report(pytestconfig: pytest.Config, integrity_alembic_config: Path,
                            integrity_postgres_url: str) -> Iterator[VerifyReport]:
    """One ``verify`` run for the session, on a fresh database; the generated tests read it."""
    from ..errors import ConfigurationError
    from ..verify import verify

    ini = pytestconfig.getini
    with fresh_database(integrity_postgres_url, prefix="verify") as url:
        problem: str | None = None
        try:
            report = verify(integrity_alembic_config, url,
                            metadata=str(ini(METADATA_INI)) or None,
                            strict=bool(ini(STRICT_INI)), data=str(ini(DATA_INI)) or None,
                            data_at=str(ini(DATA_AT_INI)) or None,
                            base=str(ini(BASE_INI)) or None,
                            idempotent_since=str(ini(BASELINE_INI)) or None,
                            skip_drift=bool(ini(SKIP_DRIFT_INI)),
                            url_env=[str(name) for name in ini(URL_ENV_INI)])
        except ConfigurationError as err:
            problem = ini_message(err)
        if problem is not None:  # failed outside the except: no chained traceback
            pytest.fail(f"alembic-integrity: {problem}", pytrace=False)
        yield report


def ini_message(err: Exception) -> str:
    """An input error as the pytest user fixes it: ini keys, not CLI flags."""
    from ..verify.inputs import SettingError

    return err.message("ini") if isinstance(err, SettingError) else str(err)


# --------------------------------------------------------------------------- generated tests


def _revisions(config_path: Path) -> list[str]:
    """The project's revisions, base first, read from the scripts (nothing connects)."""
    import io

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from ..errors import ConfigurationError

    if not config_path.is_file():
        raise ConfigurationError(
            f"{VERIFY_INI}: no Alembic config at {config_path}; set {CONFIG_INI} in the "
            "pytest configuration (relative to the rootdir)")
    script = ScriptDirectory.from_config(Config(str(config_path), stdout=io.StringIO()))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def _explain(steps: Iterable[Step]) -> str:
    lines: list[str] = []
    for step in steps:
        lines.append(f"{step.name}: {step.message}")
        if step.statement:
            lines += ["  statement:", *(f"    {s}" for s in step.statement.strip().splitlines())]
        lines += [f"  {d}" for d in step.details]
        if step.output.strip():
            lines += ["  output:", *(f"    {s}" for s in step.output.strip().splitlines()[-15:])]
    return "\n".join(lines)


def _judge(steps: list[Step], what: str) -> None:
    """Fail with the failed steps' messages; skip when none of them ran."""
    for step in steps:
        for line in step.warnings:
            warnings.warn(f"alembic-integrity: {step.name}: {line}", UserWarning, stacklevel=3)
    failed = [s for s in steps if s.status == "failed"]
    if failed:
        pytest.fail(_explain(failed), pytrace=False)
    if not steps or all(s.status == "skipped" for s in steps):
        reason = steps[0].message if steps else "not run"
        pytest.skip(f"{what}: {reason}")


class TestAlembicMigrations:
    """The checks of ``alembic-integrity verify``, one test each (one per revision)."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        from ..errors import ConfigurationError

        if "integrity_revision" in metafunc.fixturenames:
            problem: str | None = None
            revisions: list[str] = []
            try:
                revisions = _revisions(alembic_config_path(metafunc.config))
            except ConfigurationError as err:
                problem = str(err)
            if problem is not None:
                pytest.fail(f"alembic-integrity: {problem}", pytrace=False)
            metafunc.parametrize("integrity_revision", revisions, ids=revisions)

    def test_single_head(self, integrity_verify_report: VerifyReport) -> None:
        _judge([s for s in integrity_verify_report.steps if s.kind == "heads"], "single head")

    def test_revision_is_idempotent(self, integrity_verify_report: VerifyReport,
                                    integrity_revision: str) -> None:
        steps = [s for s in integrity_verify_report.steps if s.revision == integrity_revision
                 and s.kind in ("upgrade", "rerun", "data")]
        _judge(steps, f"revision {integrity_revision}")

    def test_downgrade_then_upgrade(self, integrity_verify_report: VerifyReport) -> None:
        _judge([s for s in integrity_verify_report.steps
                if s.kind in ("downgrade", "reupgrade")], "downgrade / upgrade")

    def test_no_drift(self, integrity_verify_report: VerifyReport) -> None:
        _judge([s for s in integrity_verify_report.steps if s.kind == "drift"], "drift")


class VerifyModule(pytest.Module):
    """The generated tests, collected under the alembic.ini node (no test file to write)."""

    @classmethod
    def for_config(cls, parent: pytest.Collector | pytest.Session, path: Path) -> VerifyModule:
        """A module node whose object is built here instead of imported from ``path``."""
        node: VerifyModule = cls.from_parent(parent, path=path)
        module = types.ModuleType("alembic_integrity_verify_tests")
        module.TestAlembicMigrations = TestAlembicMigrations  # type: ignore[attr-defined]
        node.obj = module  # pytest's public setter; nothing imports alembic.ini
        return node


def _is_config(file_path: Path, config: pytest.Config) -> bool:
    try:
        return file_path.resolve() == alembic_config_path(config).resolve()
    except OSError:
        return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """``pytest alembic.ini`` (or a run over the directory holding it) collects the checks."""
    if not _enabled(parent.config) or not _is_config(file_path, parent.config):
        return None
    return VerifyModule.for_config(parent, file_path)


def _whole_suite(config: pytest.Config) -> bool:
    """Runs over directories get the checks; runs of chosen files or tests do not."""
    return all(Path(arg).is_dir() for arg in config.args)


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection sees the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if not _enabled(config) or not _whole_suite(config):
        return
    if any(item.getparent(VerifyModule) is not None for item in items):
        return  # collected already: the run covers the directory holding alembic.ini
    module = VerifyModule.for_config(session, alembic_config_path(config))
    items.extend(session.genitems(module))
