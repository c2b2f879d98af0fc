"""Alembic's commands run in this process, on one ScriptDirectory and one shared connection."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from .. import compat
from ..errors import ConfigurationError
from ..pg.database import normalize_url, shown


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
def preserved_logging() -> Iterator[None]:
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
        self._outside: tuple[Any, Any] | None = None

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
        self.run_steps(lambda heads, _: compat.upgrade_steps(self.script, revision, heads),
                       destination_rev=revision)

    def downgrade(self, revision: str = "base") -> None:
        self.run_steps(lambda heads, _: compat.downgrade_steps(self.script, revision, heads),
                       destination_rev=revision)

    def stamp(self, revisions: str | Sequence[str], *, purge: bool = False) -> None:
        targets = _targets(revisions)
        self.run_steps(lambda heads, _: compat.stamp_steps(self.script, targets, heads),
                       destination_rev=targets, purge=purge)

    def rerun(self, revision: str, before: Sequence[str]) -> None:
        """Stamp back to ``before`` (what the version table held) and upgrade ``revision`` again.

        One env.py run: the stamp and the upgrade are the steps of one command.
        """
        def steps(heads: tuple[str, ...], _: Any) -> list[Any]:
            return [*compat.stamp_steps(self.script, _targets(before), heads),
                    *compat.upgrade_steps(self.script, revision, tuple(before))]

        self.run_steps(steps, destination_rev=revision, purge=True)

    def current(self) -> tuple[str, ...]:
        """The revisions in the version table now."""
        self.run_steps(lambda heads, _: [])
        return self.last_heads

    def run_steps(self, steps: Callable[[tuple[str, ...], Any], Iterable[Any]],
                  **options: Any) -> None:
        """One env.py run whose migration steps are ``steps(heads, migration_context)``.

        ``steps`` may be a generator: Alembic asks for each step after running the
        previous one, so code between the yields runs between revisions, on the
        connection and in the transaction env.py set up.
        """
        from alembic.runtime.environment import EnvironmentContext

        def fn(heads: Any, context: Any) -> Iterable[Any]:
            self.last_heads = tuple(h for h in (heads or ()) if h)
            self._note(context)
            return steps(self.last_heads, context)

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
        self._outside = (sys.stdout, sys.stderr)
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                yield
        finally:
            self._outside = None

    @contextlib.contextmanager
    def uncaptured(self) -> Iterator[None]:
        """Print to the real output from code running inside a command (progress lines)."""
        if self._outside is None:
            yield
            return
        with contextlib.redirect_stdout(self._outside[0]), \
                contextlib.redirect_stderr(self._outside[1]):
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
                f"one it was given ({shown(self.url)}); env.py must take its URL, when it runs, "
                "from config.attributes['url'], DATABASE_URL or sqlalchemy.url (a settings "
                "object built earlier in this process keeps the DATABASE_URL it saw then)"
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


def require_config(config_path: str | Path) -> Path:
    path = Path(config_path)
    if not path.is_file():
        raise ConfigurationError(f"no Alembic config at {path}; run in the project's directory "
                                 "or pass -c path/to/alembic.ini")
    return path


def alembic_config(config_path: str | Path, url: str, x_args: Sequence[str] = ()) -> Any:
    """An Alembic Config for ``url``: attributes["url"], sqlalchemy.url and ``-x`` arguments."""
    from alembic.config import Config

    path = require_config(config_path)
    config = Config(str(path), stdout=io.StringIO())
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False  # honoured by env.py files that check it
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.cmd_opts = argparse.Namespace(x=list(x_args))
    return config
