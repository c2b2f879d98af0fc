"""A failed step's message, from the exception: what PostgreSQL refused, and the statement."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError, db_message
from .report import Step


def fail_from_exception(step: Step, exc: BaseException) -> None:
    """The step's message from an exception; the statement PostgreSQL refused, if any."""
    where = f"revision {step.revision}: " if step.revision else ""
    dbapi = _dbapi_error(exc)
    if isinstance(exc, IntegrityError):  # ValidationFailed, LockRetriesExhausted, ...
        message = str(exc)
    elif dbapi is not None:
        message = f"PostgreSQL refused: {db_message(dbapi)}"
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    step.fail(where + message)
    if dbapi is not None and dbapi.statement:
        step.statement = str(dbapi.statement)


def _dbapi_error(exc: BaseException | None) -> DBAPIError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DBAPIError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None
