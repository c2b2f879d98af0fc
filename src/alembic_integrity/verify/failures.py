"""A failed step's message, from the exception: what PostgreSQL refused, and the statement."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from ..errors import IntegrityError
from .report import Step


def fail_from_exception(step: Step, exc: BaseException) -> None:
    """The step's message from an exception; the statement PostgreSQL refused, if any."""
    where = f"revision {step.revision}: " if step.revision else ""
    dbapi = _dbapi_error(exc)
    if isinstance(exc, IntegrityError):  # ValidationFailed, LockRetriesExhausted, ...
        message = str(exc)
    elif dbapi is not None:
        message = f"PostgreSQL refused: {_pg_message(dbapi)}"
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


def _pg_message(err: DBAPIError) -> str:
    orig = getattr(err, "orig", None)
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        text_ = str(orig or err).strip()
        return text_.splitlines()[0] if text_ else type(err).__name__
    detail = getattr(diag, "message_detail", None)
    state = getattr(orig, "sqlstate", None)
    suffix = (f" ({detail})" if detail else "") + (f" [SQLSTATE {state}]" if state else "")
    return str(primary) + suffix
