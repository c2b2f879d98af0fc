"""A streaming hot standby of a local throwaway server, for tests that need a read replica.

``pg_basebackup -R`` copies the primary over its private unix socket and writes
the recovery settings (``standby.signal``, ``primary_conninfo``); the copy is
then started like any local cluster, on a port of its own, in hot standby.
Everything on it is read only, as on a team's read replica.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ...errors import ServerUnavailable
from .local import LocalCluster, _tail


class StandbyCluster(LocalCluster):
    """A :class:`LocalCluster` made by a base backup of ``primary`` instead of ``initdb``."""

    from_template = False  # its data directory is the base backup, never the template

    def __init__(self, primary: LocalCluster, startup_timeout: float,
                 timings: dict[str, float]) -> None:
        super().__init__(primary.bindir, primary.dbname, startup_timeout, timings)
        self.primary = primary

    def _initdb(self, base: Path, env: dict[str, str], creds: dict[str, Any]) -> None:
        primary = self.primary
        tool = self.bindir / "pg_basebackup"
        if not os.access(tool, os.X_OK):
            raise ServerUnavailable(f"a standby needs pg_basebackup, which {self.bindir} lacks")
        if primary.base_dir is None or primary.port is None:
            raise ServerUnavailable("the primary throwaway server is not running")
        argv = [str(tool), "-D", str(base / "data"), "-R", "-X", "stream", "-c", "fast",
                "--no-sync", "-h", str(primary.base_dir / "sock"), "-p", str(primary.port),
                "-U", "postgres"]
        done = subprocess.run(argv, cwd=base, env=env, capture_output=True, text=True,
                              timeout=self.startup_timeout * 4, start_new_session=True,
                              check=False, **creds)
        if done.returncode != 0:
            raise ServerUnavailable(f"pg_basebackup failed (exit {done.returncode}): "
                                    f"{_tail(done.stdout + done.stderr)}")

    def _create_database(self, sock: Path, port: int) -> None:
        """The database came with the base backup (and a standby could not create one)."""


def wait_replayed(primary_url: str, standby_url: str, timeout: float = 30.0) -> None:
    """Block until the standby has replayed everything the primary has written so far."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    primary = create_engine(primary_url, poolclass=NullPool)
    standby = create_engine(standby_url, poolclass=NullPool)
    try:
        with primary.connect() as conn:
            # The end of a record written now: the insert position itself may sit just past a
            # page or segment header that no record follows yet, which replay never reaches.
            target = conn.execute(text(
                "SELECT pg_logical_emit_message(false, 'alembic_integrity', 'replay mark')"
            )).scalar_one()
            conn.commit()
        deadline = time.monotonic() + timeout
        with standby.connect() as conn:
            while not conn.execute(text("SELECT pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn)"),
                                   {"t": target}).scalar_one():
                conn.rollback()
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"the standby did not replay up to {target} "
                                            f"within {timeout:.0f} s")
                time.sleep(0.02)
    finally:
        primary.dispose()
        standby.dispose()
