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


# --------------------------------------------------------------------------- database errors
# One reading of what PostgreSQL said, used by every layer that turns a driver error
# into a line for a person. Duck-typed on SQLAlchemy's DBAPIError (``.orig``) and
# psycopg's ``diag``, so this module needs neither.


def sqlstate(err: BaseException) -> str | None:
    """The SQLSTATE of a database error, or None for any other exception."""
    state = getattr(getattr(err, "orig", None), "sqlstate", None)
    return str(state) if state else None


def first_line(err: BaseException) -> str:
    """PostgreSQL's primary message, one line: what a person needs, without the SQL."""
    orig = getattr(err, "orig", None)
    primary = getattr(getattr(orig, "diag", None), "message_primary", None)
    if primary:
        return str(primary).splitlines()[0]
    text = str(orig or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def db_message(err: BaseException) -> str:
    """:func:`first_line` with PostgreSQL's detail and the SQLSTATE, for reports."""
    orig = getattr(err, "orig", None)
    detail = getattr(getattr(orig, "diag", None), "message_detail", None)
    state = sqlstate(err)
    return (first_line(err) + (f" ({detail})" if detail else "")
            + (f" [SQLSTATE {state}]" if state else ""))
