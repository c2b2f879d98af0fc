"""verify's inputs: the models to compare with, and the database to run on (never a full one).

Also the project's surroundings while verify runs (:func:`project_environment`):
``DATABASE_URL`` set to the database verify uses BEFORE anything imports env.py
or the models (settings read at import, e.g. pydantic-settings, then see it),
and the current directory, the directory of alembic.ini and its
``prepend_sys_path`` on ``sys.path``, so ``--metadata app.models:Base.metadata``
imports as it does when Alembic runs.

Errors about an input name the setting to change, in the form of the caller:
a CLI option, or the pytest ini key (:class:`SettingError`).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, MetaData

from ..errors import ConfigurationError, IntegrityError
from ..pg import catalog
from ..pg.database import shown
from ..rules.metadata import load_metadata

URL_ENV = "DATABASE_URL"


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI spells it and as the pytest plugin's ini key spells it."""

    cli: str
    ini: str


METADATA = Setting("--metadata MODULE:ATTR", "alembic_integrity_metadata = module:attr")
SKIP_DRIFT = Setting("--skip-drift", "alembic_integrity_skip_drift = true")
BASE = Setting("--base-sql FILE or --base-callable MODULE:FUNCTION",
               "alembic_integrity_base = FILE.sql or module:function")
DATA = Setting("--with-data with --data-at REVISION",
               "alembic_integrity_data with alembic_integrity_data_at")
URL_ENV_NAMES = Setting("--url-env NAME (the variable env.py reads its URL from)",
                        "alembic_integrity_url_env = NAME (the variable env.py reads its URL "
                        "from)")
BASELINE = Setting("--idempotent-since REVISION (or idempotent_since in alembic.ini)",
                   "alembic_integrity_idempotent_since = REVISION (or idempotent_since in "
                   "alembic.ini)")


class SettingError(ConfigurationError):
    """A bad input, with the settings that fix it; ``str()`` is the CLI form."""

    def __init__(self, problem: str, *fixes: Setting) -> None:
        self.problem = problem
        self.fixes = fixes
        super().__init__(self.message("cli"))

    def message(self, form: Literal["cli", "ini"]) -> str:
        if not self.fixes:
            return self.problem
        if form == "cli":
            return f"{self.problem}; pass {' or '.join(f.cli for f in self.fixes)}"
        return (f"{self.problem}; set {' or '.join(f.ini for f in self.fixes)} in the pytest "
                "configuration")


@contextlib.contextmanager
def project_environment(config_path: str | Path, url: str,
                        names: Sequence[str] = ()) -> Iterator[None]:
    """``DATABASE_URL`` (and each of ``names``) = ``url``, and the project's import paths,
    for the whole run; the environment is put back afterwards."""
    variables = list(dict.fromkeys([URL_ENV, *names]))
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(dict.fromkeys(variables, url))
    try:
        with project_imports(config_path):
            yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def project_imports(config_path: str | Path) -> Iterator[None]:
    """The project's modules importable as ``alembic`` would find them (see :func:`import_paths`).

    A console script's ``sys.path`` starts with its own bin directory, not the
    current one, so ``--metadata app.models:Base.metadata`` needs this.
    """
    saved_path = list(sys.path)
    sys.path[:0] = [p for p in import_paths(config_path) if p not in sys.path]
    try:
        yield
    finally:
        sys.path[:] = saved_path


def import_paths(config_path: str | Path) -> list[str]:
    """The current directory, alembic.ini's directory and its ``prepend_sys_path`` entries."""
    import configparser

    here = Path(config_path).resolve().parent
    paths = [str(Path.cwd()), str(here)]
    parser = configparser.ConfigParser(defaults={"here": str(here)}, strict=False)
    with contextlib.suppress(configparser.Error, OSError):
        parser.read(config_path, encoding="utf-8")
        raw = parser.get("alembic", "prepend_sys_path", fallback="")
        separator = parser.get("alembic", "path_separator", fallback="os")
        split = os.pathsep if separator == "os" else None
        for entry in (raw.split(split) if split else raw.replace(",", " ").split()):
            if entry.strip():
                paths.append(str((Path.cwd() / entry.strip()).resolve()))
    return list(dict.fromkeys(paths))


def resolve_metadata(metadata: MetaData | str | None, runner: Any,
                     skip_drift: bool) -> MetaData | None:
    """The models: given, imported from ``module:attr``, or env.py's ``target_metadata``.

    env.py runs offline here, with the run's URL already in ``DATABASE_URL``,
    ``config.attributes["url"]`` and ``sqlalchemy.url`` (``runner.config``).
    """
    if skip_drift:
        return None
    if isinstance(metadata, MetaData):
        return metadata
    if metadata:
        try:
            return load_metadata(metadata)
        except ConfigurationError as err:
            raise SettingError(_without_flag(str(err)), METADATA) from err
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            found = metadata_from_env(runner)  # runs env.py offline; keep it quiet
    except IntegrityError as err:
        raise SettingError(f"env.py: {err}", METADATA, SKIP_DRIFT) from err
    except Exception as err:
        raise SettingError(
            f"cannot read target_metadata from {runner.config.config_file_name}'s env.py "
            f"offline ({type(err).__name__}: {_first_line(err)})",
            METADATA, URL_ENV_NAMES, SKIP_DRIFT) from err
    if found is None:
        raise SettingError(f"{runner.config.config_file_name}: env.py passes no single "
                           "target_metadata to context.configure", METADATA, SKIP_DRIFT)
    return found


def metadata_from_env(runner: Any) -> MetaData | None:
    """Run env.py offline on the runner's Config and keep the ``target_metadata`` it passes."""
    from alembic.runtime.environment import EnvironmentContext

    seen: dict[str, Any] = {}

    def capture(rev: Any, context: Any) -> list[Any]:
        seen["metadata"] = context.opts.get("target_metadata")
        return []

    with EnvironmentContext(runner.config, runner.script, fn=capture, as_sql=True,
                            output_buffer=io.StringIO()):
        runner.script.run_env()
    metadata = seen.get("metadata")
    if isinstance(metadata, list | tuple):
        metadata = metadata[0] if len(metadata) == 1 else None
    return metadata if isinstance(metadata, MetaData) else None


def _without_flag(message: str) -> str:
    """load_metadata speaks CLI ("--metadata 'x'"); the setting is named after the problem."""
    return "metadata " + message.removeprefix("--metadata ")


def _first_line(err: BaseException) -> str:
    """The start of the message on one line (a pydantic error names the field on line 2)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return "; ".join(lines[:3])


def require_empty(engine: Engine) -> None:
    """Verify downgrades to base: never let it near a database that holds anything."""
    with engine.connect() as conn:
        names = catalog.user_relations(conn, 6)
    if names:
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ConfigurationError(
            f"{shown(engine.url)} is not empty ({listed}); verify upgrades and downgrades the "
            "database it is given: pass the URL of an EMPTY database, or no --url to use a "
            "throwaway server"
        )


@contextlib.contextmanager
def target_database(url: str | None,
                    docker: bool | None) -> Iterator[tuple[str, str, float | None]]:
    """``(url, description, start seconds)``: the given URL, or a throwaway server's."""
    if url is not None:
        yield url, "given", None
        return
    from ..pg.throwaway import ThrowawayServer

    with ThrowawayServer(docker=docker) as server:
        yield server.url, f"throwaway ({server.mode})", server.startup_seconds
