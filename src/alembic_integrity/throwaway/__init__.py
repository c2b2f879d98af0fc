"""A PostgreSQL server that lives only as long as a ``with`` block.

Tests, benchmarks and ``alembic-integrity throwaway`` need a real server they
may break at will, without asking anyone for credentials. We start one from the
local server binaries (``initdb`` + ``postgres``, fastest and needs nothing
running) or, when a Docker engine answers, from testcontainers'
``PostgresContainer``; either way everything is stopped and deleted when the
block ends, also when it ends by an exception or Ctrl-C.

Importing this module has no side effects and imports nothing heavy; psycopg,
SQLAlchemy and testcontainers are imported when a server is started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ServerUnavailable

__all__ = [
    "BINDIR_ENV",
    "IMAGE_ENV",
    "USER_ENV",
    "ThrowawayServer",
    "docker_answers",
    "find_bindir",
    "throwaway_postgres",
]

BINDIR_ENV = "ALEMBIC_INTEGRITY_PG_BINDIR"
"""Directory holding ``initdb`` and ``postgres``; when set, the only one searched."""

USER_ENV = "ALEMBIC_INTEGRITY_PG_USER"
"""OS user that runs the server when we are root (PostgreSQL refuses to run as root)."""

IMAGE_ENV = "ALEMBIC_INTEGRITY_PG_IMAGE"
"""Docker image for the container mode."""

DEFAULT_IMAGE = "postgres:16-alpine"
SUPERUSER = "postgres"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3

# Durability is worthless for a server we delete afterwards; dropping it makes
# DDL-heavy tests several times faster.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}

_INSTALL_HINT = (
    "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), "
    f"set {BINDIR_ENV} to its bin directory, or start Docker"
)
_PORT_TAKEN = re.compile(r"could not bind|address already in use", re.IGNORECASE)
_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes; keep a margin


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class _Search:
    """Where we looked for server binaries, for the error message."""

    bindir: Path | None
    tried: tuple[str, ...]


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres"))


def _major_version(directory: Path) -> tuple[int, ...]:
    """Numeric sort key of ``/usr/lib/postgresql/<version>/bin`` (so 10 sorts above 9.6)."""
    numbers = re.findall(r"\d+", directory.parent.name)
    return tuple(int(n) for n in numbers) or (-1,)


def _search_bindir() -> _Search:
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override).expanduser()
        if _has_server_binaries(path):
            return _Search(path, ())
        return _Search(None, (f"{BINDIR_ENV}={path} (no initdb/postgres there)",))

    tried: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_server_binaries(Path(out)):
            return _Search(Path(out), ())
        tried.append(f"pg_config --bindir ({out or 'no answer'})")
    else:
        tried.append("pg_config (not on PATH)")

    initdb = shutil.which("initdb")
    if initdb and _has_server_binaries(Path(initdb).resolve().parent):
        return _Search(Path(initdb).resolve().parent, ())
    tried.append("PATH")

    for pattern in ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"):
        candidates = sorted(Path("/").glob(pattern.lstrip("/")), key=_major_version, reverse=True)
        for candidate in candidates:
            if _has_server_binaries(candidate):
                return _Search(candidate, ())
        tried.append(pattern)
    return _Search(None, tuple(tried))


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``postgres`` we would use, or None.

    Order: ``$ALEMBIC_INTEGRITY_PG_BINDIR`` (exclusively, when set), ``pg_config
    --bindir``, ``PATH``, then ``/usr/lib/postgresql/*/bin`` and
    ``/usr/pgsql-*/bin``, newest major version first.
    """
    return _search_bindir().bindir


def docker_answers(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a Docker engine answers a ping, and if not, why (one short phrase)."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False, "the docker Python package is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=max(1, round(timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means "no usable engine"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return False, f"Docker is not answering ({reason[:160]})"
    return True, "Docker answers"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged user we switch to when running as root."""

    name: str
    uid: int
    gid: int


def _run_as() -> _RunAs | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    name = os.environ.get(USER_ENV) or "postgres"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ServerUnavailable(
            f"PostgreSQL refuses to run as root and there is no OS user {name!r} to run it as; "
            f"create one (useradd --system {name}) or set {USER_ENV} to an existing "
            "unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise ServerUnavailable(f"{USER_ENV}={name} is root; PostgreSQL needs an unprivileged user")
    return _RunAs(name, entry.pw_uid, entry.pw_gid)


def _traversable(path: Path, user: _RunAs) -> bool:
    """Can ``user`` reach ``path`` (x permission on every parent directory)?"""
    import grp

    groups = {user.gid} | {g.gr_gid for g in grp.getgrall() if user.name in g.gr_mem}
    for directory in path.resolve().parents:
        st = directory.stat()
        if st.st_uid == user.uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def _make_base_dir(user: _RunAs | None) -> Path:
    """A fresh private directory the server user can reach, with room for a socket path."""
    roots = [Path(tempfile.gettempdir())]
    if Path("/tmp") not in roots and Path("/tmp").is_dir():
        roots.append(Path("/tmp"))
    for root in roots:
        probe = root / "alembic-integrity-pg-xxxxxxxx" / "sock" / ".s.PGSQL.65535"
        if len(str(probe)) > _SOCKET_PATH_MAX:
            continue
        if user is not None and not _traversable(root / "x", user):
            continue
        base = Path(tempfile.mkdtemp(prefix="alembic-integrity-pg-", dir=root))
        if user is not None:
            os.chown(base, user.uid, user.gid)
        return base
    raise ServerUnavailable(
        "no temporary directory usable for a throwaway PostgreSQL "
        f"(tried {', '.join(map(str, roots))}: socket path too long"
        " or not reachable by the server user); set TMPDIR to a short,"
        " world-traversable directory such as /tmp"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(empty)"


def _parent_death_signal() -> Any:
    """A preexec_fn asking Linux to SIGQUIT the server if our thread dies (even by SIGKILL).

    Only used from the main thread: the kernel ties the signal to the thread that
    forked, so a worker thread ending would otherwise stop the server early.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGQUIT), 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return arm


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # English server messages, so we can recognise "address in use"
    for name in ("PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"):
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------- the server


class ThrowawayServer:
    """One disposable PostgreSQL server; :meth:`start` it, use :attr:`url`, :meth:`stop` it.

    ``docker=None`` uses Docker when an engine answers, local binaries otherwise
    (when ``$ALEMBIC_INTEGRITY_PG_BINDIR`` is set, local binaries without asking
    Docker); ``True`` requires Docker, ``False`` forbids it. :meth:`stop` is
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
        self.base_dir: Path | None = None
        self.port: int | None = None
        self._url: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._container: Any = None
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
        return self._proc.pid if self._proc is not None else None

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
        if self._proc is not None:
            code = self._proc.wait()
            raise ServerUnavailable(
                f"the throwaway PostgreSQL exited unexpectedly (code {code}): "
                f"{_tail(self._read_log())}"
            )
        while self._container is not None:
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

    # -- choosing ------------------------------------------------------------------

    def _choose_mode(self) -> str:
        if self.docker is True:
            ok, reason = docker_answers()
            if not ok:
                raise ServerUnavailable(
                    f"a Docker PostgreSQL was required but {reason}; start Docker, or drop "
                    "--docker to use local PostgreSQL binaries"
                )
            return "docker"
        if self.docker is None and not os.environ.get(BINDIR_ENV):
            ok, docker_reason = docker_answers()
            if ok:
                return "docker"
        elif self.docker is None:
            docker_reason = f"Docker not tried because {BINDIR_ENV} is set"
        else:
            docker_reason = "Docker not allowed (docker=False)"
        search = _search_bindir()
        if search.bindir is None:
            raise ServerUnavailable(
                "cannot start a throwaway PostgreSQL: no initdb/postgres found in "
                f"{', '.join(search.tried)}; {docker_reason}; {_INSTALL_HINT}"
            )
        self._bindir = search.bindir
        return "local"

    # -- local mode ------------------------------------------------------------------

    def _start_local(self) -> None:
        bindir = self._bindir
        assert bindir is not None
        user = _run_as()
        creds: dict[str, Any] = {}
        if user is not None:
            creds = {"user": user.uid, "group": user.gid, "extra_groups": []}
        env = _child_env()

        began = time.monotonic()
        self.base_dir = base = _make_base_dir(user)
        sock = base / "sock"
        sock.mkdir(mode=0o700)
        if user is not None:
            os.chown(sock, user.uid, user.gid)
        initdb = [
            str(bindir / "initdb"),
            "-D",
            str(base / "data"),
            "--auth=trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        try:
            done = subprocess.run(
                initdb,
                cwd=base,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout * 4,
                start_new_session=True,
                check=False,
                **creds,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerUnavailable(f"could not run {initdb[0]}: {exc}; {_INSTALL_HINT}") from exc
        if done.returncode != 0:
            raise ServerUnavailable(
                f"initdb from {bindir} failed (exit {done.returncode}): "
                f"{_tail(done.stdout + done.stderr)}"
            )
        self.timings["initdb"] = time.monotonic() - began

        began = time.monotonic()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = _free_port()
            seen = len(self._read_log())  # judge each attempt by its own lines
            self._spawn_postgres(bindir, port, env, creds)
            if self._wait_ready(port, sock):
                break
            self._reap()
            log = self._read_log()[seen:]
            if attempt < PORT_ATTEMPTS and _PORT_TAKEN.search(log):
                continue  # somebody took the port between our probe and the bind
            raise ServerUnavailable(
                f"PostgreSQL from {bindir} did not start (port {port}, data {base / 'data'}): "
                f"{_tail(log)}"
            )
        self.port = port
        self.timings["postgres"] = time.monotonic() - began

        if self.dbname != SUPERUSER:
            self._create_database(sock, port)
        from sqlalchemy.engine import URL

        self._url = URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            host="127.0.0.1",
            port=port,
            database=self.dbname,
        ).render_as_string(hide_password=False)

    def _spawn_postgres(
        self, bindir: Path, port: int, env: dict[str, str], creds: dict[str, Any]
    ) -> None:
        assert self.base_dir is not None
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.base_dir / "data"),
            "-p",
            str(port),
            "-k",
            str(self.base_dir / "sock"),
            "-c",
            "listen_addresses=127.0.0.1",
        ]
        for name, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.base_dir / "server.log", "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches us, not the
            # server, so we decide the order of shutdown.
            self._proc = subprocess.Popen(
                argv,
                cwd=self.base_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
                **creds,
            )

    def _wait_ready(self, port: int, sock: Path) -> bool:
        """Poll over the private unix socket (nobody else can answer there) until ready.

        The server opens its TCP socket before the unix one, so an answer here
        means 127.0.0.1:port is listening too. False if the server exited.
        """
        import psycopg

        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                return False
            if (sock / f".s.PGSQL.{port}").exists():
                try:
                    with psycopg.connect(
                        host=str(sock),
                        port=port,
                        user=SUPERUSER,
                        dbname=SUPERUSER,
                        connect_timeout=2,
                        sslmode="disable",
                    ):
                        return True
                except psycopg.OperationalError as exc:
                    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            if time.monotonic() > deadline:
                raise ServerUnavailable(
                    f"PostgreSQL did not accept connections within {self.startup_timeout:.0f} s "
                    f"(last error: {last}): {_tail(self._read_log())}"
                )
            time.sleep(0.01)

    def _create_database(self, sock: Path, port: int) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(sock),
            port=port,
            user=SUPERUSER,
            dbname=SUPERUSER,
            autocommit=True,
            sslmode="disable",
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))

    def _read_log(self) -> str:
        path = self.log_path
        try:
            return path.read_text(errors="replace") if path is not None else ""
        except OSError:
            return ""

    def _reap(self) -> None:
        """Make sure the postmaster and all its children are gone, and reaped."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGQUIT)  # "immediate shutdown": no checkpoint
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # The postmaster leads its own process group; until we reap it the
                # group id cannot be reused, so this kills only its processes.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None

    # -- docker mode ------------------------------------------------------------------

    def _start_docker(self) -> None:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            try:
                from testcontainers.postgres import PostgresContainer
            except ImportError as exc:
                raise ServerUnavailable(
                    "Docker answers but testcontainers is not installed "
                    "(pip install 'testcontainers[postgres]')"
                ) from exc
        image = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        container = PostgresContainer(
            image, username=SUPERUSER, password="throwaway", dbname=self.dbname, driver="psycopg"
        )
        container.with_command(
            "postgres " + " ".join(f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        )
        self._container = container
        try:
            container.start()
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ServerUnavailable(
                f"could not start a PostgreSQL container from {image}: {first[:300]}"
            ) from exc
        self._url = container.get_connection_url()

    # -- stopping -------------------------------------------------------------------------

    def _stop_once(self) -> None:
        self._url = None
        self._reap()
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.stop()
            except Exception as exc:  # the Ryuk reaper removes it later anyway
                warnings.warn(f"could not remove the PostgreSQL container: {exc}", stacklevel=3)
        if self.base_dir is not None and self.base_dir.exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)
            if self.base_dir.exists():
                warnings.warn(f"could not delete {self.base_dir}", stacklevel=3)


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
