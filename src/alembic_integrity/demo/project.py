"""Where the reference Alembic project lives: package data beside these modules.

``alembic.ini``, ``migrations/env.py`` and ``migrations/versions/`` ship in the
wheel, so ``alembic-integrity demo`` runs from an installed package in any
folder; the repository's own ``alembic.ini`` points at the same files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = PROJECT_DIR / "alembic.ini"
MIGRATIONS = PROJECT_DIR / "migrations"


def copy_project(dest: Path) -> Path:
    """Copy alembic.ini and migrations/ into ``dest`` (created); return the copied alembic.ini.

    For tests and benchmarks that add revisions of their own to the reference ones.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ALEMBIC_INI, dest / "alembic.ini")
    shutil.copytree(MIGRATIONS, dest / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest / "alembic.ini"
