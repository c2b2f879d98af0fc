"""alembic-integrity: lock-safe, idempotent integrity rules for PostgreSQL.

Importing the package registers the ``ensure_*`` operations on Alembic's ``op`` object,
so a revision only needs ``import alembic_integrity``. The names below are the public
API; everything else may change between minor releases.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .audit.core import AuditReport, Finding, audit
from .audit.preflight import PreflightResult, preflight
from .autogenerate import integrity_autogenerate
from .errors import (
    CatalogError,
    ConfigurationError,
    IntegrityError,
    LockRetriesExhausted,
    PredicateError,
    ServerUnavailable,
    ValidationFailed,
)
from .operations import toimpl as _toimpl  # noqa: F401  (registers op.ensure_*)
from .pg.throwaway import ThrowawayServer, throwaway_postgres
from .repair import RepairResult, repair
from .repair.restore import RestoreResult, restore
from .rules.metadata import DeclaredRules, rules_from_metadata
from .rules.policies import (
    Delete,
    Expectation,
    Invalidate,
    Manual,
    Quarantine,
    Relink,
    SetValue,
    Sql,
    expect,
    on_violation,
)
from .settings import Settings
from .verify import VerifyReport, verify

try:
    __version__ = _version("alembic-integrity")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AuditReport",
    "CatalogError",
    "ConfigurationError",
    "DeclaredRules",
    "Delete",
    "Expectation",
    "Finding",
    "IntegrityError",
    "Invalidate",
    "LockRetriesExhausted",
    "Manual",
    "PredicateError",
    "PreflightResult",
    "Quarantine",
    "Relink",
    "RepairResult",
    "RestoreResult",
    "ServerUnavailable",
    "SetValue",
    "Settings",
    "Sql",
    "ThrowawayServer",
    "ValidationFailed",
    "VerifyReport",
    "__version__",
    "audit",
    "expect",
    "integrity_autogenerate",
    "on_violation",
    "preflight",
    "repair",
    "restore",
    "rules_from_metadata",
    "throwaway_postgres",
    "verify",
]
