"""A cache of ``initdb``'d clusters, so a throwaway server copies one instead of running initdb.

``initdb`` is most of a throwaway server's start (it bootstraps three databases
from scratch, ~0.5 s on an idle machine, seconds on a busy one); copying its
result is a fraction of that. One template per binaries and user: the key hashes
the real path and the size/mtime of ``initdb`` and ``postgres`` (an upgrade of
the binaries makes a new key), the initdb options and the uid that owns the
files. Templates live under ``$ALEMBIC_INTEGRITY_CACHE_DIR`` (default
``$XDG_CACHE_HOME/alembic-integrity`` or ``~/.cache/alembic-integrity``), in
``pg-templates/<key>/data``; ``ALEMBIC_INTEGRITY_CACHE_DIR=off`` turns it off.

The template is a cluster that never ran: copying it gives exactly what a fresh
initdb gives. A template appears atomically (built in a staging directory, then
renamed), so concurrent sessions (pytest-xdist workers) never see half of one.
The cache is only a speed-up: any failure to read or write it falls back to
initdb, and is never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CACHE_ENV = "ALEMBIC_INTEGRITY_CACHE_DIR"
"""Where templates are cached; ``off`` (or ``0``) to always run initdb."""

_FORMAT = 1  # bump when the layout of a template changes
_STALE_STAGING_S = 3600.0


def cache_root() -> Path | None:
    """``<cache dir>/pg-templates``, or None when the cache is turned off."""
    configured = os.environ.get(CACHE_ENV, "")
    if configured.lower() in ("off", "0", "false", "no"):
        return None
    if configured:
        base = Path(configured).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "alembic-integrity"
    return base / "pg-templates"


def template_key(bindir: Path, initdb_options: tuple[str, ...], owner_uid: int) -> str | None:
    """The cache key of these binaries, options and owner; None if the binaries cannot be read."""
    parts: list[object] = [_FORMAT, list(initdb_options), owner_uid]
    try:
        for name in ("initdb", "postgres"):
            path = (bindir / name).resolve()
            st = path.stat()
            parts += [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def restore(root: Path, key: str, dest: Path) -> bool:
    """Copy the cached template into ``dest`` (which must not exist); False if none or failed."""
    source = root / key / "data"
    if not (source / "PG_VERSION").is_file():
        return False
    if _copy_tree(source, dest):
        return True
    shutil.rmtree(dest, ignore_errors=True)
    return False


def store(root: Path, key: str, data_dir: Path, bindir: Path) -> None:
    """Keep a copy of a cluster initdb just made (it never ran) as the template for ``key``."""
    if (root / key / "data" / "PG_VERSION").is_file():
        return
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _prune(root)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    except OSError:
        return
    try:
        if not _copy_tree(data_dir, staging / "data"):
            return
        (staging / "meta.json").write_text(json.dumps({"bindir": str(bindir), "key": key}))
        with contextlib.suppress(OSError):  # another session stored it first: keep theirs
            os.rename(staging, root / key)
    except OSError:
        return
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the rename won


def _copy_tree(source: Path, dest: Path) -> bool:
    """``cp -a``: keeps modes and, as root, the server user's ownership, in one process."""
    cp = shutil.which("cp")
    if cp is None:
        return False
    try:
        done = subprocess.run([cp, "-a", str(source), str(dest)], capture_output=True,
                              timeout=300, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _prune(root: Path) -> None:
    """Drop templates whose binaries are gone, and staging left behind by a killed process."""
    now = time.time()
    for entry in root.iterdir():
        try:
            if entry.name.startswith(".staging-"):
                if now - entry.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            meta = json.loads((entry / "meta.json").read_text())
            bindir = Path(meta["bindir"])
            if not (bindir / "initdb").exists() or not (bindir / "postgres").exists():
                shutil.rmtree(entry, ignore_errors=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue
