"""Prove an Alembic project's migrations on a real PostgreSQL before they meet production.

:func:`verify` runs, against a throwaway server (or an EMPTY database you name):

1. **one head**: two heads would make ``alembic upgrade head`` fail in deployment;
2. **each revision, one at a time**, upgraded and then run AGAIN (the version
   table stamped back to what it was before, the revision upgraded once more),
   requiring that the second run changes nothing a catalog snapshot sees
   (constraints with definition, validity and OID, columns, indexes, tables,
   row counts): a deployment that dies half way is re-run, so every revision
   must be safe to run twice;
3. **downgrade to base, then upgrade to head again**, which must rebuild the
   same schema (each revision's downgrade is run on its own when the history is
   linear, so a failure names the revision);
4. **drift** between the models (env.py's ``target_metadata``) and the database
   at head: every declared CHECK, NOT NULL and FOREIGN KEY present, validated
   and with the definition PostgreSQL stores for the model's declaration.
   Constraints the database has and the models lack are reported; they fail
   the run only with ``strict=True``.

Optionally a data set is loaded after a given revision (``data=`` /
``data_at=``) so that later revisions, their re-runs and the downgrades run
over rows, as data migrations do in production.

Alembic runs in this process, through ``EnvironmentContext`` like
``alembic.command`` does, but with one ``ScriptDirectory`` for the whole run:
``alembic.command`` re-reads every revision file on each call, which would make
verify quadratic in the number of revisions. The project's ``env.py`` gets the
database URL as ``config.attributes["url"]``, as ``DATABASE_URL`` in
``os.environ`` (for the duration of the run) and as the in-memory
``sqlalchemy.url``; before any revision runs, verify checks that env.py
really connected to that database, and stops otherwise.

Failures never raise: each becomes a failed :class:`Step` naming the revision
and, when PostgreSQL refused something, the statement and its message.
Problems with the inputs (no alembic.ini, a bad ``--metadata``, a database
that is not empty) raise :class:`~alembic_integrity.errors.ConfigurationError`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from sqlalchemy import Connection, Engine, MetaData, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .. import catalog
from ..database import normalize_url, shown
from ..errors import ConfigurationError, IntegrityError
from ..identifiers import TableName
from ..model_rules import (
    DeclaredRules,
    constraint_name,
    load_metadata,
    metadata_from_alembic,
    rules_from_metadata,
)
from ..rules import CheckRule, ForeignKeyRule, NotNullRule, Rule
from ..schema_snapshot import SchemaSnapshot, differences, take

__all__ = [
    "AlembicRunner",
    "Drift",
    "Step",
    "VerifyReport",
    "WrongDatabase",
    "drift",
    "junit_xml",
    "load_data_source",
    "verify",
]

DataLoader = Callable[[Connection], object]
Progress = Callable[["Step"], None]

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
MAX_DETAILS = 30  # lines of a schema diff kept per step; the rest is counted


# --------------------------------------------------------------------------- report


@dataclass
class Step:
    """One check: a revision's upgrade, its re-run, a downgrade, the drift check..."""

    name: str
    kind: str  # heads | upgrade | rerun | data | downgrade | reupgrade | drift
    revision: str | None = None
    status: str = PASSED
    seconds: float = 0.0
    message: str = ""
    statement: str | None = None
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""  # what Alembic / env.py printed, kept for failed steps

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def fail(self, message: str, details: Iterable[str] = ()) -> None:
        self.status = FAILED
        self.message = message
        self.details.extend(_capped(list(details)))


@dataclass
class VerifyReport:
    config_path: str
    database: str = ""
    server: str = ""
    server_seconds: float | None = None
    seconds: float = 0.0
    heads: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.status == FAILED]

    def step(self, kind: str, revision: str | None = None) -> Step | None:
        """The step of that kind (and revision), for tests that assert on one check."""
        return next((s for s in self.steps if s.kind == kind and s.revision == revision), None)

    def summary(self) -> str:
        counts = {status: sum(s.status == status for s in self.steps)
                  for status in (PASSED, FAILED, SKIPPED)}
        parts = [f"{counts[PASSED]} passed"]
        parts += [f"{counts[s]} {s}" for s in (FAILED, SKIPPED) if counts[s]]
        start = f", server start {self.server_seconds:.2f} s" if self.server_seconds else ""
        verdict = "OK" if self.ok else "FAILED"
        return f"verify {verdict}: {', '.join(parts)} in {self.seconds:.2f} s{start}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, exit_code=self.exit_code, summary=self.summary())
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_DETAILS:
        return lines
    return [*lines[:MAX_DETAILS], f"... and {len(lines) - MAX_DETAILS} more"]


def junit_xml(report: VerifyReport) -> str:
    """JUnit XML, one testcase per step, for CI systems that show test results."""
    suite = ElementTree.Element("testsuite", {
        "name": "alembic-integrity verify",
        "tests": str(len(report.steps)),
        "failures": str(len(report.failures)),
        "errors": "0",
        "skipped": str(sum(s.status == SKIPPED for s in report.steps)),
        "time": f"{report.seconds:.3f}",
    })
    for step in report.steps:
        case = ElementTree.SubElement(suite, "testcase", {
            "classname": f"alembic-integrity.verify.{step.kind}",
            "name": step.name,
            "time": f"{step.seconds:.3f}",
        })
        if step.status == FAILED:
            failure = ElementTree.SubElement(case, "failure", {"message": step.message})
            failure.text = "\n".join(_failure_lines(step))
        elif step.status == SKIPPED:
            ElementTree.SubElement(case, "skipped", {"message": step.message})
        if step.warnings:
            ElementTree.SubElement(case, "system-out").text = "\n".join(step.warnings)
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _failure_lines(step: Step) -> list[str]:
    lines = [step.message]
    if step.statement:
        lines += ["statement:", step.statement.strip()]
    lines += step.details
    return lines


# --------------------------------------------------------------------------- running Alembic


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the block, then put back what was there."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _preserved_logging() -> Iterator[None]:
    """Undo what env.py's ``fileConfig`` does to logging: verify is a library call."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {name: (lg.level, lg.disabled, list(lg.handlers), lg.propagate)
             for name, lg in list(manager.loggerDict.items()) if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in list(manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in saved:
                lg.level, lg.disabled, handlers, lg.propagate = saved[name]
                lg.handlers[:] = handlers
            else:
                lg.handlers[:] = []


class AlembicRunner:
    """Alembic commands against one database, in this process, with one ScriptDirectory.

    ``upgrade``/``downgrade``/``stamp`` do what ``alembic.command`` does. One
    connection is offered to env.py as ``config.attributes["connection"]`` (the
    Alembic cookbook's way to share one; env.py files that ignore it connect
    through the URL), as ``alembic upgrade head`` also runs every revision on
    one connection. What env.py and Alembic print is captured (``capture=True``)
    and kept in :attr:`last_output`, so a failure can show it and a passing run
    stays quiet. :meth:`close` (or ``with``) releases the connection.
    """

    def __init__(self, config_path: str | Path, url: str, *, x_args: Sequence[str] = (),
                 capture: bool = True) -> None:
        from alembic.script import ScriptDirectory

        self.url = normalize_url(url).render_as_string(hide_password=False)
        self.config = alembic_config(config_path, self.url, x_args)
        self.script = ScriptDirectory.from_config(self.config)
        self.capture = capture
        self.last_output = ""
        self.last_heads: tuple[str, ...] = ()
        self.version_tables: set[tuple[str | None, str]] = set()
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._identity: tuple[Any, ...] | None = None
        self._checked = False

    def __enter__(self) -> AlembicRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop_connection()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- revisions -------------------------------------------------------------

    def heads(self) -> list[str]:
        return list(self.script.get_heads())

    def revisions(self) -> list[Any]:
        """Every revision's Script, base first (an order in which each can be upgraded)."""
        return list(reversed(list(self.script.walk_revisions("base", "heads"))))

    def resolve(self, revision: str) -> str:
        """A full revision id for an id, a unique prefix, ``head`` or a branch label."""
        from alembic.util import CommandError

        try:
            found = self.script.get_revision(revision)
        except CommandError as err:
            raise ConfigurationError(f"revision {revision!r}: {err}") from err
        if found is None:
            raise ConfigurationError(f"revision {revision!r} is base, not a revision")
        return str(found.revision)

    def is_linear(self) -> bool:
        """No branch and no merge: each downgrade can then run on its own."""
        return all(not isinstance(s.down_revision, tuple | list) and len(s.nextrev) <= 1
                   for s in self.revisions())

    # -- commands ----------------------------------------------------------------

    def upgrade(self, revision: str = "heads") -> None:
        self._run(lambda heads: self.script._upgrade_revs(revision, heads),
                  destination_rev=revision)

    def downgrade(self, revision: str = "base") -> None:
        self._run(lambda heads: self.script._downgrade_revs(revision, heads),
                  destination_rev=revision)

    def stamp(self, revisions: str | Sequence[str], *, purge: bool = False) -> None:
        targets = _targets(revisions)
        self._run(lambda heads: self.script._stamp_revs(targets, heads),
                  destination_rev=targets, purge=purge)

    def rerun(self, revision: str, before: Sequence[str]) -> None:
        """Stamp back to ``before`` (what the version table held) and upgrade ``revision`` again.

        One env.py run: the stamp and the upgrade are the steps of one command.
        """
        targets = _targets(before)

        def steps(heads: Any) -> list[Any]:
            return [*self.script._stamp_revs(targets, heads),
                    *self.script._upgrade_revs(revision, tuple(before))]

        self._run(steps, destination_rev=revision, purge=True)

    def current(self) -> tuple[str, ...]:
        """The revisions in the version table now."""
        self._run(lambda heads: [])
        return self.last_heads

    def _run(self, steps: Callable[[Any], list[Any]], **options: Any) -> None:
        from alembic.runtime.environment import EnvironmentContext

        def fn(heads: Any, context: Any) -> list[Any]:
            self.last_heads = tuple(h for h in (heads or ()) if h)
            self._note(context)
            return steps(heads)

        buffer = io.StringIO()
        self.config.attributes["connection"] = self._shared_connection()
        try:
            with _environ("DATABASE_URL", self.url), self._captured(buffer), \
                    EnvironmentContext(self.config, self.script, fn=fn, **options):
                self.script.run_env()
        except BaseException:
            self._drop_connection()  # a failed command may leave it unusable
            raise
        finally:
            self.last_output = buffer.getvalue()
            self.config.attributes.pop("connection", None)
        self._settle_connection()

    def _shared_connection(self) -> Connection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            if self._engine is None:
                self._engine = create_engine(self.url, poolclass=NullPool)
            self._connection = self._engine.connect()
        return self._connection

    def _settle_connection(self) -> None:
        """Alembic commits what it began; anything env.py left open is dropped, as on close."""
        if self._connection is not None and self._connection.in_transaction():
            self._connection.rollback()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    @contextlib.contextmanager
    def _captured(self, buffer: io.StringIO) -> Iterator[None]:
        if not self.capture:
            yield
            return
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield

    def _note(self, context: Any) -> None:
        """Remember the version table, and refuse to run on another database than ours."""
        self.version_tables.add((context.version_table_schema, context.version_table))
        if self._checked or context.connection is None:
            return
        seen = _server_identity(context.connection)
        if self._identity is None:
            self._identity = self.identity()
        if seen != self._identity:
            raise WrongDatabase(
                f"env.py connected to another database ({seen[0]} on port {seen[1]}) than the "
                f"one it was given ({shown(self.url)}); make env.py use config.attributes"
                "['url'] or the DATABASE_URL environment variable"
            )
        self._checked = True

    def identity(self) -> tuple[Any, ...]:
        """Who answers on our own connection (compared with whom env.py reached)."""
        with self._engine_connect() as conn:
            return _server_identity(conn)

    @contextlib.contextmanager
    def _engine_connect(self) -> Iterator[Connection]:
        if self._engine is None:
            self._engine = create_engine(self.url, poolclass=NullPool)
        with self._engine.connect() as conn:
            yield conn


def _targets(revisions: str | Sequence[str]) -> tuple[str, ...]:
    return (revisions,) if isinstance(revisions, str) else tuple(revisions) or ("base",)


class WrongDatabase(ConfigurationError):
    """env.py connected elsewhere: stop before any revision runs there."""


def _server_identity(conn: Connection) -> tuple[Any, ...]:
    """Database name, port and server start time: equal only for the same database."""
    row = conn.execute(text(
        "SELECT current_database(), inet_server_port(), pg_postmaster_start_time()")).one()
    return tuple(row)


def _require_config(config_path: str | Path) -> Path:
    path = Path(config_path)
    if not path.is_file():
        raise ConfigurationError(f"no Alembic config at {path}; run in the project's directory "
                                 "or pass -c path/to/alembic.ini")
    return path


def alembic_config(config_path: str | Path, url: str, x_args: Sequence[str] = ()) -> Any:
    """An Alembic Config for ``url``: attributes["url"], sqlalchemy.url and ``-x`` arguments."""
    from alembic.config import Config

    path = _require_config(config_path)
    config = Config(str(path), stdout=io.StringIO())
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False  # honoured by env.py files that check it
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.cmd_opts = argparse.Namespace(x=list(x_args))
    return config


# --------------------------------------------------------------------------- data sets


def load_data_source(source: str | Path | DataLoader) -> DataLoader:
    """A ``.sql`` file, a ``module:function`` taking a Connection, or a callable, as a loader."""
    if callable(source):
        return source
    spec = str(source)
    if spec.endswith(".sql") or Path(spec).is_file():
        return _sql_file_loader(Path(spec))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--with-data {spec!r}: expected a .sql file or "
                                 "module:function (called with a SQLAlchemy Connection)")
    try:
        target: Any = import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ConfigurationError(f"--with-data {spec!r}: {err}") from err
    if not callable(target):
        raise ConfigurationError(f"--with-data {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _sql_file_loader(path: Path) -> DataLoader:
    if not path.is_file():
        raise ConfigurationError(f"--with-data {path}: no such file")
    sql = path.read_text(encoding="utf-8")

    def load(conn: Connection) -> None:
        # On the driver's connection, without parameters: psycopg then sends the file as
        # one simple query (several statements allowed) and leaves '%' alone.
        conn.connection.driver_connection.execute(sql)  # type: ignore[union-attr]

    load.__name__ = f"load {path.name}"
    return load


# --------------------------------------------------------------------------- drift


@dataclass
class Drift:
    """Models against database: ``missing`` fails; ``extra`` fails only when strict."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def drift(conn: Connection, metadata: MetaData) -> Drift:
    """Compare the rules ``metadata`` declares with the database (read only, rolled back)."""
    declared = rules_from_metadata(metadata)
    result = Drift(unchecked=[f"not checked: {p}" for p in declared.problems])
    with conn.begin() as tx:
        for table in declared.tables:
            _table_drift(conn, table, declared, result)
        for table in metadata.sorted_tables:
            _extra_rules(conn, table, declared, result)
        tx.rollback()
    return result


def _table_drift(conn: Connection, table: TableName, declared: DeclaredRules,
                 result: Drift) -> None:
    oid = catalog.table_oid(conn, table)
    if oid is None:
        result.missing.append(f"table {table} does not exist (the models declare rules on it)")
        return
    for rule in declared.for_table(table):
        try:
            problem = _rule_drift(conn, oid, rule)
        except IntegrityError as err:
            problem = str(err)
        if problem:
            result.missing.append(problem)


def _rule_drift(conn: Connection, oid: int, rule: Rule) -> str | None:
    if isinstance(rule, NotNullRule):
        not_null = catalog.column_not_null(conn, oid, rule.column)
        if not_null is None:
            return f"{rule.table}.{rule.column}: the column does not exist"
        return None if not_null else (f"{rule.table}.{rule.column}: the models declare NOT "
                                      "NULL, the database allows NULL")
    if isinstance(rule, CheckRule):
        return _check_drift(conn, oid, rule)
    if isinstance(rule, ForeignKeyRule):
        return _foreign_key_drift(conn, oid, rule)
    return None  # expectations are audit-only, never constraints


def _check_drift(conn: Connection, oid: int, rule: CheckRule) -> str | None:
    wanted = catalog.normalized_check(conn, rule)
    live = catalog.constraint(conn, oid, rule.name)
    where = f"CHECK {rule.name} on {rule.table}"
    if live is None:
        return f"{where}: missing in the database (models: {wanted})"
    if live.contype != "c" or live.definition != wanted:
        return f"{where} differs: models {wanted}, database {live.definition}"
    return None if live.validated else f"{where}: NOT VALID in the database (never validated)"


def _foreign_key_drift(conn: Connection, oid: int, rule: ForeignKeyRule) -> str | None:
    live = catalog.constraint(conn, oid, rule.name)
    where = f"FOREIGN KEY {rule.name} on {rule.table}"
    wanted = rule.add_sql().partition(" FOREIGN KEY ")[2].removesuffix(" NOT VALID")
    if live is None:
        return f"{where}: missing in the database (models: FOREIGN KEY {wanted})"
    if catalog.table_oid(conn, rule.referent) is None:
        return f"{where}: the referenced table {rule.referent} does not exist"
    if not catalog.same_foreign_key(conn, live, rule):
        return f"{where} differs: models FOREIGN KEY {wanted}, database {live.definition}"
    return None if live.validated else f"{where}: NOT VALID in the database (never validated)"


def _extra_rules(conn: Connection, table: Any, declared: DeclaredRules, result: Drift) -> None:
    """CHECKs, FOREIGN KEYs and NOT NULLs the database has on a model table, the models not."""
    name = TableName(table.name, table.schema)
    oid = catalog.table_oid(conn, name)
    if oid is None:
        return
    known = {constraint_name(c) for c in table.constraints}
    known |= {getattr(r, "name", None) for r in declared.for_table(name)
              if not isinstance(r, NotNullRule)}
    rows = conn.execute(text(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = :oid AND contype IN ('c', 'f') ORDER BY conname"), {"oid": oid})
    for conname, definition in rows:
        if conname not in known:
            result.extra.append(f"{definition.split(' (')[0]} {conname} on {name}: in the "
                                f"database, not in the models ({definition})")
    nullable = {c.name for c in table.columns if c.nullable and not c.primary_key}
    for column in sorted(nullable):
        if catalog.column_not_null(conn, oid, column):
            result.extra.append(f"{name}.{column}: NOT NULL in the database, nullable in the "
                                "models")


# --------------------------------------------------------------------------- verify


@dataclass
class _Options:
    strict: bool
    metadata: MetaData | None
    loader: DataLoader | None
    data_at: str | None
    data_label: str = "data"


class _Run:
    """One verify run: the runner, an engine for snapshots, the report being filled."""

    def __init__(self, runner: AlembicRunner, engine: Engine, report: VerifyReport,
                 options: _Options, progress: Progress | None) -> None:
        self.runner = runner
        self.engine = engine
        self.report = report
        self.options = options
        self.progress = progress
        self.empty: SchemaSnapshot | None = None
        self.at_head: SchemaSnapshot | None = None

    # -- bookkeeping ---------------------------------------------------------------

    def step(self, step: Step, action: Callable[[Step], None]) -> bool:
        """Run ``action``; an exception fails the step with what PostgreSQL said."""
        started = time.perf_counter()
        try:
            action(step)
        except (WrongDatabase, KeyboardInterrupt):
            raise
        except Exception as exc:
            _fail_from_exception(step, exc)
            step.output = self.runner.last_output
        step.seconds = time.perf_counter() - started
        self.add(step)
        return step.ok

    def add(self, step: Step) -> None:
        self.report.steps.append(step)
        if self.progress is not None:
            self.progress(step)

    def skip(self, name: str, kind: str, reason: str, revision: str | None = None) -> None:
        self.add(Step(name, kind, revision, status=SKIPPED, message=reason))

    def snapshot(self, count_rows: bool = False) -> SchemaSnapshot:
        with self.engine.connect() as conn:
            return take(conn, count_rows=count_rows)

    def without_version_table(self, snapshot: SchemaSnapshot) -> SchemaSnapshot:
        return snapshot.without_tables(
            (schema, table) for schema, table in self.runner.version_tables)

    def load_data(self, revision: str) -> bool:
        loader = self.options.loader
        assert loader is not None

        def load(step: Step) -> None:
            with self.engine.begin() as conn:
                loader(conn)

        label = self.options.data_label
        return self.step(Step(f"load {label} at {revision}", "data", revision), load)

    # -- phases ----------------------------------------------------------------------

    def run(self) -> None:
        if not self.heads():
            return self.skip_rest("not run: the project needs exactly one head")
        self.empty = self.snapshot()
        scripts = self.runner.revisions()
        for index, script in enumerate(scripts):
            if not self.revision(script.revision):
                reason = f"not run: revision {script.revision} failed to upgrade"
                for later in scripts[index + 1:]:
                    self.skip(f"upgrade {later.revision}", "upgrade", reason, later.revision)
                return self.skip_rest(reason)
        self.at_head = self.snapshot()
        if not self.downgrade(scripts):
            return self.skip_rest("not run: the downgrade failed", after_downgrade=True)
        self.step(Step("upgrade base -> head again", "reupgrade"), self.reupgrade)
        self.step(Step("drift: models vs database", "drift"), self.check_drift)

    def skip_rest(self, reason: str, after_downgrade: bool = False) -> None:
        if not after_downgrade:
            self.skip("downgrade to base", "downgrade", reason)
        self.skip("upgrade base -> head again", "reupgrade", reason)
        self.skip("drift: models vs database", "drift", reason)

    def heads(self) -> bool:
        heads = self.runner.heads()
        self.report.heads = heads
        self.report.revisions = [s.revision for s in self.runner.revisions()]
        step = Step("single head", "heads")
        if not heads:
            step.fail(f"no revisions in {self.runner.script.dir}")
        elif len(heads) > 1:
            step.fail(f"{len(heads)} heads: {', '.join(heads)}; merge them with: "
                      f"alembic merge -m \"merge heads\" {' '.join(heads)}")
        self.add(step)
        return step.ok

    def revision(self, revision: str) -> bool:
        """Upgrade to ``revision``, then run it again and require that nothing changed."""
        if not self.step(Step(f"upgrade {revision}", "upgrade", revision),
                         lambda step: self.runner.upgrade(revision)):
            return False
        before = self.runner.last_heads
        self.step(Step(f"re-run {revision}", "rerun", revision),
                  lambda step: self.rerun(step, revision, before))
        if self.options.data_at == revision:
            return self.load_data(revision)
        return True

    def rerun(self, step: Step, revision: str, before: tuple[str, ...]) -> None:
        once = self.snapshot(count_rows=True)
        try:
            self.runner.rerun(revision, before)  # as if the revision had never been recorded
        except Exception:
            output = self.runner.last_output
            self.restore(revision)
            self.runner.last_output = output  # the failed run's, for the report
            raise
        changed = differences(once, self.snapshot(count_rows=True))
        if changed:
            step.fail(f"revision {revision} is not idempotent: running it again changed "
                      f"the schema or data ({_plural(len(changed), 'difference')})", changed)

    def restore(self, revision: str) -> None:
        """After a failed re-run, record the revision as applied again (it was, once)."""
        with contextlib.suppress(Exception):
            self.runner.stamp(revision)

    def downgrade(self, scripts: list[Any]) -> bool:
        """Each revision's downgrade on its own (linear history), else one downgrade to base."""
        if self.runner.is_linear():
            plan = [(f"downgrade {s.revision}", s.revision, s.down_revision or "base")
                    for s in reversed(scripts)]
        else:
            plan = [("downgrade to base", None, "base")]
        for index, (name, revision, target) in enumerate(plan):
            last = index == len(plan) - 1

            def action(step: Step, target: str = target, last: bool = last) -> None:
                self.runner.downgrade(target)
                if last:
                    step.warnings.extend(self.leftovers())

            if not self.step(Step(name, "downgrade", revision), action):
                return False
        return True

    def leftovers(self) -> list[str]:
        """What the downgrades left behind: reported, not fatal (it may be on purpose)."""
        assert self.empty is not None
        left = differences(self.without_version_table(self.empty),
                           self.without_version_table(self.snapshot()), oids=False, rows=False)
        return _capped([f"left after downgrade to base: {line}" for line in left])

    def reupgrade(self, step: Step) -> None:
        data_at = self.options.data_at
        if data_at is not None:
            self.runner.upgrade(data_at)
            with self.engine.begin() as conn:
                assert self.options.loader is not None
                self.options.loader(conn)
        self.runner.upgrade("heads")
        assert self.at_head is not None
        changed = differences(self.at_head, self.snapshot(), oids=False, rows=False)
        if changed:
            step.fail("upgrade -> downgrade -> upgrade does not rebuild the schema the first "
                      "upgrade built", changed)

    def check_drift(self, step: Step) -> None:
        metadata = self.options.metadata
        if metadata is None:
            step.status = SKIPPED
            step.message = "drift not checked (skip_drift)"
            return
        with self.engine.connect() as conn:
            found = drift(conn, metadata)
        step.warnings.extend(found.unchecked)
        if found.missing or (found.extra and self.options.strict):
            extra = found.extra if self.options.strict else []
            step.fail(f"the database differs from the models: {len(found.missing)} declared "
                      f"rule(s) not in place" + (f", {len(extra)} extra" if extra else ""),
                      found.missing + extra)
        if not self.options.strict:
            step.warnings.extend(f"extra (not fatal without --strict): {line}"
                                 for line in found.extra)


def _fail_from_exception(step: Step, exc: BaseException) -> None:
    """The step's message from an exception; the statement PostgreSQL refused, if any."""
    where = f"revision {step.revision}: " if step.revision else ""
    dbapi = _dbapi_error(exc)
    if isinstance(exc, IntegrityError):  # ValidationFailed, LockRetriesExhausted, ...
        message = str(exc)
    elif dbapi is not None:
        message = f"PostgreSQL refused: {_pg_message(dbapi)}"
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    step.fail(where + message)
    if dbapi is not None and dbapi.statement:
        step.statement = str(dbapi.statement)


def _dbapi_error(exc: BaseException | None) -> DBAPIError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DBAPIError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _pg_message(err: DBAPIError) -> str:
    orig = getattr(err, "orig", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        text_ = str(orig or err).strip()
        return text_.splitlines()[0] if text_ else type(err).__name__
    detail = getattr(diag, "message_detail", None)
    state = getattr(orig, "sqlstate", None)
    return primary + (f" ({detail})" if detail else "") + (f" [SQLSTATE {state}]" if state else "")


def _resolve_metadata(metadata: MetaData | str | None, config_path: str,
                      skip_drift: bool) -> MetaData | None:
    if skip_drift:
        return None
    if isinstance(metadata, MetaData):
        return metadata
    if metadata:
        return load_metadata(metadata)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return metadata_from_alembic(config_path)  # runs env.py offline; keep it quiet
    except IntegrityError:
        raise
    except Exception as err:
        raise ConfigurationError(
            f"cannot read target_metadata from {config_path}'s env.py offline "
            f"({type(err).__name__}: {err}); pass --metadata module:attr or --skip-drift"
        ) from err


def _require_empty(engine: Engine) -> None:
    """Verify downgrades to base: never let it near a database that holds anything."""
    with engine.connect() as conn:
        names = conn.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT LIKE 'pg!_%' "
            "ESCAPE '!' AND n.nspname <> 'information_schema' ORDER BY 1 LIMIT 6")).scalars().all()
    if names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigurationError(
            f"{shown(engine.url)} is not empty ({listed}); verify upgrades and downgrades the "
            "database it is given: pass the URL of an EMPTY database, or no --url to use a "
            "throwaway server"
        )


@contextlib.contextmanager
def _database(url: str | None, docker: bool | None) -> Iterator[tuple[str, str, float | None]]:
    """``(url, description, start seconds)``: the given URL, or a throwaway server's."""
    if url is not None:
        yield url, "given", None
        return
    from ..throwaway import ThrowawayServer

    with ThrowawayServer(docker=docker) as server:
        yield server.url, f"throwaway ({server.mode})", server.startup_seconds


def verify(config_path: str | Path = "alembic.ini", url: str | None = None, *,
           metadata: MetaData | str | None = None, strict: bool = False,
           data: str | Path | DataLoader | None = None, data_at: str | None = None,
           x_args: Sequence[str] = (), docker: bool | None = None, skip_drift: bool = False,
           progress: Progress | None = None) -> VerifyReport:
    """Run every check on the project of ``config_path``; see the module docstring.

    ``url``: an EMPTY database to use (default: a throwaway server, started and
    deleted here). ``metadata``: a MetaData or ``module:attr`` (default: env.py's
    ``target_metadata``). ``data``/``data_at``: a loader (see
    :func:`load_data_source`) run after upgrading to revision ``data_at``.
    ``progress(step)`` is called as each step ends. Raises ConfigurationError for
    bad inputs; every check's failure is in the report instead.
    """
    started = time.perf_counter()
    config_path = str(config_path)
    if (data is None) != (data_at is None):
        raise ConfigurationError("--with-data and --data-at go together: the data set is "
                                 "loaded after upgrading to that revision")
    loader = load_data_source(data) if data is not None else None
    with _preserved_logging():
        _require_config(config_path)
        model = _resolve_metadata(metadata, config_path, skip_drift)
        report = VerifyReport(config_path)
        with _database(url, docker) as (db_url, server, server_seconds):
            report.database = shown(db_url)
            report.server, report.server_seconds = server, server_seconds
            runner = AlembicRunner(config_path, db_url, x_args=x_args)
            resolved = runner.resolve(data_at) if data_at is not None else None
            options = _Options(strict, model, loader, resolved, _data_label(data))
            _verify_on(runner, report, options, progress, check_empty=url is not None)
    report.seconds = time.perf_counter() - started
    return report


def _data_label(data: str | Path | DataLoader | None) -> str:
    if data is None or isinstance(data, str | Path):
        return Path(str(data)).name if str(data).endswith(".sql") else str(data)
    return getattr(data, "__qualname__", None) or repr(data)


def _verify_on(runner: AlembicRunner, report: VerifyReport, options: _Options,
               progress: Progress | None, check_empty: bool) -> None:
    engine = create_engine(runner.url)
    try:
        if check_empty:
            _require_empty(engine)
        _Run(runner, engine, report, options, progress).run()
    finally:
        runner.close()
        engine.dispose()
