"""The server from local binaries: ``initdb`` and ``postgres`` in a private temporary directory.

As root, both run as the unprivileged user of :func:`~.binaries.run_as`. The
server listens on 127.0.0.1 and on a unix socket only we can reach, leads a
process group of its own, and gets SIGQUIT if our main thread dies.
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

from ...errors import ServerUnavailable
from . import template
from .binaries import INSTALL_HINT, RunAs, run_as, traversable
from .defaults import SERVER_SETTINGS, STOP_TIMEOUT_S, SUPERUSER

PORT_ATTEMPTS = 3

# --wal-segsize=1: 1 MB of WAL instead of 16 MB in a fresh cluster, so a template copies faster.
INITDB_OPTIONS = ("--auth=trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8", "--locale=C",
                  "--wal-segsize=1")

_PORT_TAKEN = re.compile(r"could not bind|address already in use", re.IGNORECASE)
_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes; keep a margin


class LocalCluster:
    """One cluster: :meth:`start` it; :meth:`reap` stops it, :meth:`remove` deletes its files."""

    from_template = True
    """Whether the data directory may be a copy of the cached initdb template; a subclass
    whose :meth:`_initdb` makes something else (a base backup) sets it False."""

    def __init__(self, bindir: Path, dbname: str, startup_timeout: float,
                 timings: dict[str, float]) -> None:
        self.bindir = bindir
        self.dbname = dbname
        self.startup_timeout = startup_timeout
        self.timings = timings  # the server's: "initdb" and "postgres" seconds
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.base_dir / "server.log" if self.base_dir is not None else None

    def start(self) -> str:
        """initdb, start postgres on a free port, create the database; return its URL."""
        user = run_as()
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
        self._make_data_dir(base, env, creds, user)
        self.timings["initdb"] = time.monotonic() - began

        began = time.monotonic()
        port = self._start_postgres(base, sock, env, creds)
        self.port = port
        self.timings["postgres"] = time.monotonic() - began

        if self.dbname != SUPERUSER:
            self._create_database(sock, port)
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            host="127.0.0.1",
            port=port,
            database=self.dbname,
        ).render_as_string(hide_password=False)

    def _make_data_dir(self, base: Path, env: dict[str, str], creds: dict[str, Any],
                       user: RunAs | None) -> None:
        """``base/data``: a copy of the cached template if there is one, else initdb (then cached).

        ``timings["template"]`` is 1.0 when the template was copied, 0.0 when initdb ran.
        """
        data = base / "data"
        root = template.cache_root() if self.from_template else None
        key = None
        if root is not None:
            key = template.template_key(self.bindir, INITDB_OPTIONS,
                                        user.uid if user is not None else os.getuid())
        if root is not None and key is not None and template.restore(root, key, data):
            self.timings["template"] = 1.0
            return
        self.timings["template"] = 0.0
        self._initdb(base, env, creds)
        if root is not None and key is not None:
            template.store(root, key, data, self.bindir)

    def _initdb(self, base: Path, env: dict[str, str], creds: dict[str, Any]) -> None:
        bindir = self.bindir
        initdb = [str(bindir / "initdb"), "-D", str(base / "data"), *INITDB_OPTIONS]
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
            raise ServerUnavailable(f"could not run {initdb[0]}: {exc}; {INSTALL_HINT}") from exc
        if done.returncode != 0:
            raise ServerUnavailable(
                f"initdb from {bindir} failed (exit {done.returncode}): "
                f"{_tail(done.stdout + done.stderr)}"
            )

    def _start_postgres(self, base: Path, sock: Path, env: dict[str, str],
                        creds: dict[str, Any]) -> int:
        """Start postgres on a free port (another one if the port is taken); return the port."""
        bindir = self.bindir
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = _free_port()
            seen = len(self.read_log())  # judge each attempt by its own lines
            self._spawn_postgres(port, env, creds)
            if self._wait_ready(port, sock):
                break
            self.reap()
            log = self.read_log()[seen:]
            if attempt < PORT_ATTEMPTS and _PORT_TAKEN.search(log):
                continue  # somebody took the port between our probe and the bind
            raise ServerUnavailable(
                f"PostgreSQL from {bindir} did not start (port {port}, data {base / 'data'}): "
                f"{_tail(log)}"
            )
        return port

    def _spawn_postgres(self, port: int, env: dict[str, str], creds: dict[str, Any]) -> None:
        assert self.base_dir is not None
        argv = [
            str(self.bindir / "postgres"),
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
            self.proc = subprocess.Popen(
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

        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            if self.proc.poll() is not None:
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
                    f"(last error: {last}): {_tail(self.read_log())}"
                )
            time.sleep(0.002)  # the server is usually ready within tens of ms

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

    def read_log(self) -> str:
        path = self.log_path
        try:
            return path.read_text(errors="replace") if path is not None else ""
        except OSError:
            return ""

    def reap(self) -> None:
        """Make sure the postmaster and all its children are gone, and reaped."""
        proc = self.proc
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
        self.proc = None

    def wait(self) -> None:
        """Block until the server ends; then raise :class:`ServerUnavailable` (it died)."""
        assert self.proc is not None
        code = self.proc.wait()
        raise ServerUnavailable(
            f"the throwaway PostgreSQL exited unexpectedly (code {code}): "
            f"{_tail(self.read_log())}"
        )

    def remove(self) -> None:
        """Delete the cluster's directory (after :meth:`reap`)."""
        if self.base_dir is not None and self.base_dir.exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)
            if self.base_dir.exists():
                warnings.warn(f"could not delete {self.base_dir}", stacklevel=4)


def _make_base_dir(user: RunAs | None) -> Path:
    """A fresh private directory the server user can reach, with room for a socket path.

    In memory (``/dev/shm``) when nobody chose ``TMPDIR`` and it has room: a throwaway
    cluster needs no durability, and on a disk other jobs keep busy, the kernel's
    write-back throttling makes copying the 30 MB template (or initdb) take seconds
    instead of a fraction of one.
    """
    roots = [Path(tempfile.gettempdir())]
    if not os.environ.get("TMPDIR") and _roomy_tmpfs(_SHM):
        roots.insert(0, _SHM)
    if Path("/tmp") not in roots and Path("/tmp").is_dir():
        roots.append(Path("/tmp"))
    for root in roots:
        probe = root / "alembic-integrity-pg-xxxxxxxx" / "sock" / ".s.PGSQL.65535"
        if len(str(probe)) > _SOCKET_PATH_MAX:
            continue
        if user is not None and not traversable(root / "x", user):
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


_SHM = Path("/dev/shm")
_SHM_MIN_FREE = 2 << 30  # a small /dev/shm (Docker's default is 64 MB) is not used


def _roomy_tmpfs(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= _SHM_MIN_FREE


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
