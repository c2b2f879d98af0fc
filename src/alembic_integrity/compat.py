"""The few places where we lean on another library's internals, each behind one function.

Everything else uses public API. Each function here is pinned by ``tests/test_compat.py``
on the installed versions and on the lowest supported ones, so a rename upstream fails
that test rather than silently changing behaviour.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CheckConstraint, Column, Computed, Constraint, Identity, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.sql import naming, schema


def pg_dialect() -> PGDialect:
    """A PostgreSQL dialect for compiling and quoting (its constructor is untyped)."""
    return cast(PGDialect, postgresql.dialect())  # type: ignore[no-untyped-call]


def convention_name(constraint: Constraint, table: Table) -> str | None:
    """The name the MetaData's naming convention gives ``constraint``, None if it gives none.

    SQLAlchemy applies conventions only while compiling DDL; this is the function it
    uses there (``sqlalchemy.sql.naming``, private).
    """
    fn: Any = getattr(naming, "_constraint_name_for_table")  # noqa: B009
    name = fn(constraint, table)
    return str(name) if isinstance(name, str) and name else None


def is_type_bound(constraint: CheckConstraint) -> bool:
    """A CHECK SQLAlchemy generates itself for a Boolean or Enum type (private flag)."""
    return bool(getattr(constraint, "_type_bound", False))


def nullability_unset(column: Column[Any]) -> bool:
    """``nullable`` was not given for ``column`` (SQLAlchemy private sentinel), as Alembic asks."""
    return getattr(column, "_user_defined_nullable", None) is getattr(
        schema, "NULL_UNSPECIFIED", object()
    )


def is_identity_or_computed(*defaults: Any) -> tuple[bool, bool]:
    """Whether any server default is an Identity, and whether any is Computed."""
    return (any(isinstance(d, Identity) for d in defaults),
            any(isinstance(d, Computed) for d in defaults))
