"""Prove an Alembic project's migrations on a real PostgreSQL before they meet production.
Imports ``rules`` and ``pg`` (the throwaway server and schema snapshots).

:func:`verify` runs, against a throwaway server (or an EMPTY database you name):

1. **one head**: two heads would make ``alembic upgrade head`` fail in deployment;
2. **the base schema**, when given (``base=``): what the project creates outside
   Alembic before its first revision, built on the empty database;
3. **each revision, one at a time**, upgraded and, when its re-run is required
   (:mod:`.baseline`: a per-revision marker, else the project's
   ``idempotent_since`` baseline, else every revision), run AGAIN (the version
   table stamped back to what it was before, the revision upgraded once more),
   requiring that the second run changes nothing a catalog snapshot sees
   (constraints with definition, validity and OID, columns, indexes, tables,
   row counts): a deployment that dies half way is re-run;
4. **drift** between the models (env.py's ``target_metadata``) and the database
   at head, right after the first upgrade, so that whatever the downgrades do
   it is reported: every declared CHECK, NOT NULL and FOREIGN KEY present,
   validated and with the definition PostgreSQL stores for the model's
   declaration. Constraints the database has and the models lack are reported;
   they fail the run only with ``strict=True``;
5. **downgrade to base, then upgrade to head again**, which must rebuild the
   same schema (each revision's downgrade is run on its own when the history is
   linear, so a failure names the revision).

A failed re-run or drift stops nothing; a failed downgrade skips only the
upgrade back; a failed upgrade ends the run there (the database stays as it
stopped, for inspection).

Optionally a data set is loaded after a given revision (``data=`` /
``data_at=``) so that later revisions, their re-runs and the downgrades run
over rows, as data migrations do in production.

Alembic runs in this process, through ``EnvironmentContext`` like
``alembic.command`` does, but with one ``ScriptDirectory`` for the whole run:
``alembic.command`` re-reads every revision file on each call, which would make
verify quadratic in the number of revisions. The server is started first; the
project's ``env.py`` then gets the database URL as ``config.attributes["url"]``,
as ``DATABASE_URL`` in ``os.environ`` (for the duration of the run, set before
env.py or the models are first imported, so settings read at import see it)
and as the in-memory ``sqlalchemy.url``; before any revision runs, verify
checks that env.py really connected to that database, and stops otherwise.

Failures never raise: each becomes a failed :class:`Step` naming the revision
and, when PostgreSQL refused something, the statement and its message.
Problems with the inputs (no alembic.ini, a bad ``--metadata``, a database
that is not empty) raise :class:`~alembic_integrity.errors.ConfigurationError`
(a :class:`SettingError` names the setting, as a CLI option or a pytest ini key).

The package, in the order a run uses it: ``inputs`` (the models, the database,
the environment env.py sees), ``baseline`` (which re-runs are required),
``runner`` (Alembic in this process), ``steps`` (the checks), ``data`` (the
``--with-data`` set), ``drift``, ``failures`` (a step's message from an
exception) and ``report`` (steps, JSON, JUnit XML).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import MetaData, create_engine

from ..errors import ConfigurationError
from ..pg.database import normalize_url, shown
from .baseline import current_head, policy, read_baseline, write_baseline
from .data import DataLoader, data_label, load_data_source
from .drift import Drift, drift
from .inputs import (
    BASE,
    DATA,
    SettingError,
    project_environment,
    require_empty,
    resolve_metadata,
    target_database,
)
from .report import FAILED as FAILED
from .report import MAX_DETAILS as MAX_DETAILS
from .report import PASSED as PASSED
from .report import SKIPPED as SKIPPED
from .report import Step, VerifyReport, junit_xml
from .runner import AlembicRunner, WrongDatabase, preserved_logging, require_config
from .runner import alembic_config as alembic_config
from .steps import Options, Run, StepCallback

__all__ = [
    "AlembicRunner",
    "Drift",
    "SettingError",
    "Step",
    "VerifyReport",
    "WrongDatabase",
    "drift",
    "junit_xml",
    "load_data_source",
    "record_baseline",
    "verify",
]


def verify(config_path: str | Path = "alembic.ini", url: str | None = None, *,
           metadata: MetaData | str | None = None, strict: bool = False,
           data: str | Path | DataLoader | None = None, data_at: str | None = None,
           x_args: Sequence[str] = (), docker: bool | None = None, skip_drift: bool = False,
           progress: StepCallback | None = None, base: str | Path | DataLoader | None = None,
           idempotent_since: str | None = None, url_env: Sequence[str] = ()) -> VerifyReport:
    """Run every check on the project of ``config_path``; see the module docstring.

    ``url``: an EMPTY database to use (default: a throwaway server, started and
    deleted here). ``metadata``: a MetaData or ``module:attr`` (default: env.py's
    ``target_metadata``). ``data``/``data_at``: a loader (see
    :func:`load_data_source`) run after upgrading to revision ``data_at``.
    ``base``: the same kinds of loader, run on the empty database before the
    first revision (what the project creates outside Alembic).
    ``idempotent_since``: the re-run baseline (default: ``idempotent_since`` in
    alembic.ini's ``[alembic_integrity]`` section; see :mod:`.baseline`).
    ``url_env``: environment variables besides ``DATABASE_URL`` that get the
    URL for the run, for env.py files that read another one.
    ``progress(step)`` is called as each step ends. Raises ConfigurationError for
    bad inputs; every check's failure is in the report instead.
    """
    started = time.perf_counter()
    config_path = str(config_path)
    if (data is None) != (data_at is None):
        raise SettingError("the data set and the revision to load it at go together", DATA)
    with preserved_logging():
        require_config(config_path)
        report = VerifyReport(config_path)
        with target_database(url, docker) as (db_url, server, server_seconds), \
                project_environment(config_path, normalized(db_url), url_env):
            report.database = shown(db_url)
            report.server, report.server_seconds = server, server_seconds
            runner = AlembicRunner(config_path, db_url, x_args=x_args)
            try:
                options = _options(runner, report, metadata=metadata, strict=strict, data=data,
                                   data_at=data_at, skip_drift=skip_drift, base=base,
                                   idempotent_since=idempotent_since)
            except BaseException:
                runner.close()
                raise
            _verify_on(runner, report, options, progress, check_empty=url is not None)
    report.seconds = time.perf_counter() - started
    return report


def _options(runner: AlembicRunner, report: VerifyReport, *, metadata: MetaData | str | None,
             strict: bool, data: str | Path | DataLoader | None, data_at: str | None,
             skip_drift: bool, base: str | Path | DataLoader | None,
             idempotent_since: str | None) -> Options:
    """The run's inputs, read once the URL is in place (env.py and models may read it)."""
    loader = load_data_source(data) if data is not None else None
    base_loader = load_data_source(base, BASE, "base schema") if base is not None else None
    model = resolve_metadata(metadata, runner, skip_drift)
    try:
        resolved = runner.resolve(data_at) if data_at is not None else None
    except SettingError:
        raise
    except ConfigurationError as err:
        raise SettingError(f"the revision to load the data set at: {err}", DATA) from err
    source = "given" if idempotent_since is not None else "alembic.ini [alembic_integrity]"
    chosen = idempotent_since if idempotent_since is not None else read_baseline(runner.config)
    rerun = policy(runner.script, chosen, source)
    report.idempotent_since = rerun.baseline
    return Options(strict, model, loader, resolved, data_label(data), base=base_loader,
                   base_label=data_label(base), rerun=rerun)


def _verify_on(runner: AlembicRunner, report: VerifyReport, options: Options,
               progress: StepCallback | None, check_empty: bool) -> None:
    engine = create_engine(runner.url)
    try:
        if check_empty:
            require_empty(engine)
        Run(runner, engine, report, options, progress).run()
    finally:
        runner.close()
        engine.dispose()


def record_baseline(config_path: str | Path = "alembic.ini") -> str:
    """Write the project's current head as ``idempotent_since`` into alembic.ini; return it.

    Reads only the revision files (nothing connects, env.py does not run).
    """
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    path = require_config(config_path)
    head = current_head(ScriptDirectory.from_config(Config(str(path), stdout=io.StringIO())))
    write_baseline(path, head)
    return head


def normalized(url: str) -> str:
    """The URL env.py gets in DATABASE_URL: the one the runner uses, password included."""
    return normalize_url(url).render_as_string(hide_password=False)
