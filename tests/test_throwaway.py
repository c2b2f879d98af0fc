"""The throwaway server really starts, really answers, and really leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from alembic_integrity.errors import ServerUnavailable
from alembic_integrity.pg.throwaway import (
    BINDIR_ENV,
    ThrowawayServer,
    binaries,
    find_bindir,
    local,
    template,
    throwaway_postgres,
)

SUBPROCESS_TIMEOUT = 90


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "alembic-integrity"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from alembic_integrity.cli import main; main()"]


def _server_facts(url: str) -> tuple[int, Path]:
    """(postmaster PID, data directory) of the server behind ``url``."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            data = Path(conn.execute(sa.text("show data_directory")).scalar_one())
    finally:
        engine.dispose()
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    return pid, data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an unreaped zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _gone_soon(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _refuses(url: str) -> bool:
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect():
            return False
    except sa.exc.OperationalError:
        return True
    finally:
        engine.dispose()


def test_url_answers_with_durability_off_and_everything_goes_afterwards() -> None:
    with throwaway_postgres(docker=False) as url:
        assert re.fullmatch(r"postgresql\+psycopg://postgres@127\.0\.0\.1:\d+/postgres", url)
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
            settings = {
                name: conn.execute(sa.text(f"show {name}")).scalar_one()
                for name in ("fsync", "synchronous_commit", "full_page_writes", "max_connections")
            }
            assert conn.execute(sa.text("show listen_addresses")).scalar_one() == "127.0.0.1"
        engine.dispose()
        pid, data = _server_facts(url)
        assert _alive(pid)
        assert data.is_dir()
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
    }
    assert not _alive(pid)
    assert not data.exists()
    assert not data.parent.exists()
    assert _refuses(url)


def test_cleanup_when_the_body_raises() -> None:
    with pytest.raises(ZeroDivisionError), throwaway_postgres(docker=False) as url:
        pid, data = _server_facts(url)
        1 / 0  # noqa: B018
    assert not _alive(pid)
    assert not data.parent.exists()


def test_other_dbname_and_server_object() -> None:
    server = ThrowawayServer(docker=False, dbname="app")
    with server:
        assert server.url.endswith("/app")
        assert server.mode == "local"
        assert server.startup_seconds is not None and server.startup_seconds > 0
        engine = sa.create_engine(server.url, poolclass=NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == "app"
        engine.dispose()
        pid, base = server.pid, server.base_dir
        assert pid is not None and base is not None
        with pytest.raises(RuntimeError):
            server.start()
    assert not _alive(pid)
    assert not base.exists()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = server.url


def test_bad_bindir_names_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINDIR_ENV, str(tmp_path))
    with pytest.raises(ServerUnavailable) as caught, throwaway_postgres(docker=False):
        pytest.fail("must not start")
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "apt-get install postgresql" in message
    assert "\n" not in message


def test_failed_start_reports_the_server_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A postgres that dies at once: the error carries its last words, nothing is left."""
    real = find_bindir()
    assert real is not None
    # not under tmp_path: as root the server runs as `postgres`, who cannot enter it
    bindir = Path(tempfile.mkdtemp(prefix="alembic-integrity-test-bin-"))
    try:
        bindir.chmod(0o755)
        (bindir / "initdb").symlink_to(real / "initdb")
        fake = bindir / "postgres"
        fake.write_text("#!/bin/sh\necho 'FATAL:  simulated breakage' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv(BINDIR_ENV, str(bindir))
        server = ThrowawayServer(docker=False)
        with pytest.raises(ServerUnavailable, match="simulated breakage") as caught:
            server.start()
    finally:
        shutil.rmtree(bindir)
    assert "\n" not in str(caught.value)
    assert server.base_dir is not None
    assert not server.base_dir.exists()
    assert server.pid is None


def test_cli_returns_the_commands_exit_code() -> None:
    code = "import os,sys; print(os.environ['DATABASE_URL']); sys.exit(3)"
    done = subprocess.run(
        [*_cli(), "throwaway", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 3, done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("postgresql+psycopg://")
    assert _refuses(url)


def test_cli_sigterm_stops_command_and_server() -> None:
    script = "import os,time; print(os.environ['DATABASE_URL'], flush=True); time.sleep(120)"
    proc = subprocess.Popen(
        [*_cli(), "throwaway", "--no-docker", "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        pid, data = _server_facts(url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SUBPROCESS_TIMEOUT) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _gone_soon(pid)
    assert not data.parent.exists()


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    import sqlalchemy as sa
    from alembic_integrity.pg.throwaway import throwaway_postgres

    # a shell may start us with SIGINT ignored; we want Python's KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with throwaway_postgres(docker=False) as url:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            data = conn.execute(sa.text("show data_directory")).scalar_one()
        engine.dispose()
        pid = open(data + "/postmaster.pid").readline().strip()
        print(data, pid, flush=True)
        time.sleep(120)
    """
)


def test_ctrl_c_removes_server_and_files() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert len(line) == 2, proc.stderr.read() if proc.stderr else ""
        data, pid = Path(line[0]), int(line[1])
        assert _alive(pid) and data.is_dir()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=SUBPROCESS_TIMEOUT)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in stderr
    assert not _alive(pid)
    assert not data.parent.exists()


def test_integrity_database_url_is_fresh_and_private(integrity_database_url: str) -> None:
    engine = sa.create_engine(integrity_database_url, poolclass=NullPool)
    with engine.connect() as conn:
        name = conn.execute(sa.text("select current_database()")).scalar_one()
        tables = conn.execute(
            sa.text("select count(*) from pg_tables where schemaname = 'public'")
        ).scalar_one()
    engine.dispose()
    assert re.fullmatch(r"test_[0-9a-f]{32}", name)
    assert tables == 0


def test_bindir_discovery_finds_server_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BINDIR_ENV, raising=False)
    found = find_bindir()
    assert found is not None, "these tests need local PostgreSQL server binaries"
    assert (found / "initdb").exists() and (found / "postgres").exists()


def _start_and_mark(marker: str | None = None) -> tuple[float, bool]:
    """Start a server; (template flag, whether table ``marker`` existed); create it if given."""
    with ThrowawayServer(docker=False) as server:
        engine = sa.create_engine(server.url, poolclass=NullPool)
        with engine.begin() as conn:
            seen = marker is not None and conn.execute(
                sa.text("select to_regclass(:t) is not null"), {"t": marker}).scalar_one()
            if marker is not None:
                conn.execute(sa.text(f"create table {marker} (id int)"))
        engine.dispose()
        base = server.base_dir
        flag = server.timings["template"]
    assert base is not None and not base.exists()
    return flag, bool(seen)


def test_template_is_cached_then_copied_and_each_copy_is_fresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(template.CACHE_ENV, str(tmp_path / "cache"))
    assert _start_and_mark("left_by_the_first") == (0.0, False)  # initdb ran, then cached
    entries = list((tmp_path / "cache" / "pg-templates").iterdir())
    assert len(entries) == 1 and (entries[0] / "data" / "PG_VERSION").is_file()
    assert _start_and_mark("left_by_the_first") == (1.0, False)  # copied, and it never ran
    assert not list((tmp_path / "cache" / "pg-templates").glob(".staging-*"))


def test_template_cache_off_or_broken_falls_back_to_initdb(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(template.CACHE_ENV, "off")
    assert _start_and_mark() == (0.0, False)
    assert _start_and_mark() == (0.0, False)
    # a template directory without a cluster in it (e.g. emptied by hand) is not used
    monkeypatch.setenv(template.CACHE_ENV, str(tmp_path))
    bindir = find_bindir()
    assert bindir is not None
    key = template.template_key(bindir, local.INITDB_OPTIONS,
                                local.run_as().uid if local.run_as() else os.getuid())
    assert key is not None
    (tmp_path / "pg-templates" / key / "data").mkdir(parents=True)
    assert _start_and_mark() == (0.0, False)


def test_templates_of_binaries_that_are_gone_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "pg-templates"
    gone = root / "0123456789abcdef0123"
    (gone / "data").mkdir(parents=True)
    (gone / "meta.json").write_text('{"bindir": "/nonexistent/bin", "key": "x"}')
    stale = root / ".staging-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    data = tmp_path / "cluster"
    data.mkdir()
    (data / "PG_VERSION").write_text("16\n")
    template.store(root, "fedcba", data, tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["fedcba"]
    assert (root / "fedcba" / "data" / "PG_VERSION").read_text() == "16\n"


def test_a_wheels_binaries_are_found_after_the_local_installation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The [server] wheel is found by its package, without importing it; local comes first.

    (.ci/demo-unprivileged shows the wheel being used where no local installation is.)
    """
    monkeypatch.delenv(BINDIR_ENV, raising=False)
    local_bindir = find_bindir()
    assert local_bindir is not None
    package = tmp_path / "fake_pg_wheel"
    bindir = package / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    for name in ("initdb", "postgres"):
        (bindir / name).symlink_to(local_bindir / name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(binaries, "WHEELS", (("fake_pg_wheel", "pginstall/bin"),))
    assert binaries._wheel_bindir("fake_pg_wheel", "pginstall/bin") == bindir
    assert binaries._wheel_bindir("no_such_wheel", "pginstall/bin") is None
    assert find_bindir() == local_bindir
