"""Errors meant for people.

Every error the toolkit raises on purpose derives from :class:`IntegrityError`
and carries one readable line; the CLI prints that line and exits with
``exit_code`` (2 unless a subclass says otherwise) instead of a traceback.
"""

from __future__ import annotations


class IntegrityError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class ConfigurationError(IntegrityError):
    """A bad setting, URL, metadata path or model declaration."""


class CatalogError(IntegrityError):
    """The database does not have what an operation or rule names."""


class PredicateError(IntegrityError):
    """PostgreSQL cannot parse or apply a CHECK predicate."""


class LockRetriesExhausted(IntegrityError):
    """A short DDL transaction never got its lock within the retry budget."""


class ValidationFailed(IntegrityError):
    """VALIDATE CONSTRAINT found rows that break the rule."""

    def __init__(self, message: str, *, constraint: str, table: str, count: int,
                 sample: list[object]) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.table = table
        self.count = count
        self.sample = sample


class ServerUnavailable(IntegrityError):
    """No PostgreSQL could be reached or started."""
