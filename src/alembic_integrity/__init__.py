"""alembic-integrity: lock-safe, idempotent integrity rules for PostgreSQL.

Importing the package registers the ``ensure_*`` operations on Alembic's
``op`` object, so a revision only needs ``import alembic_integrity``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import IntegrityError, ValidationFailed
from .operations import toimpl as _implementations  # noqa: F401  (registers the ops)
from .settings import Settings

__all__ = ["IntegrityError", "Settings", "ValidationFailed", "__version__"]
