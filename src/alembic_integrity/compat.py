"""The few places where we lean on another library's internals, each behind one function.

Everything else uses public API. Each function here is pinned by ``tests/test_compat.py``
on the installed versions and on the lowest supported ones, so a rename upstream fails
that test rather than silently changing behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from alembic.runtime.migration import MigrationContext, MigrationStep
from alembic.script import ScriptDirectory
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


# --------------------------------------------------------------------------- Alembic
# Alembic's commands build their step lists with private ScriptDirectory methods
# (_upgrade_revs, _downgrade_revs, _stamp_revs). Upgrade and downgrade steps are
# built here from names Alembic exposes without an underscore
# (ScriptDirectory.iterate_revisions, MigrationStep.upgrade_from_script /
# downgrade_from_script); the stamp steps and the transaction owner have no public
# form.


def upgrade_steps(script: ScriptDirectory, destination: str,
                  heads: Sequence[str]) -> list[Any]:
    """The steps ``alembic upgrade destination`` runs from ``heads``, oldest first.

    ``implicit_base`` lets a revision of another branch than the current heads'
    be reached from base, as ``alembic upgrade`` does.
    """
    found = script.iterate_revisions(destination, tuple(heads), implicit_base=True)
    return [MigrationStep.upgrade_from_script(script.revision_map, s)
            for s in reversed(list(found))]


def downgrade_steps(script: ScriptDirectory, destination: str,
                    heads: Sequence[str]) -> list[Any]:
    """The steps ``alembic downgrade destination`` runs from ``heads``, newest first."""
    found = script.iterate_revisions(tuple(heads), destination, select_for_downgrade=True)
    return [MigrationStep.downgrade_from_script(script.revision_map, s) for s in found]


def stamp_steps(script: ScriptDirectory, targets: Sequence[str],
                heads: Sequence[str]) -> list[Any]:
    """Steps that move the version table from ``heads`` to ``targets`` running no revision.

    Needed inside one command's step list (stamp back, then upgrade again);
    ``MigrationContext.stamp`` runs them at once instead (private: _stamp_revs).
    """
    return list(script._stamp_revs(tuple(targets) or ("base",), tuple(heads)))


def owns_transaction(ctx: MigrationContext) -> bool:
    """Whether the connection's transaction, if any, is one Alembic began itself.

    ``autocommit_block`` commits Alembic's transaction; inside a transaction env.py
    opened itself (``connection.begin()`` before ``context.configure``) it cannot
    (private: _in_external_transaction, _transaction, read without a default).
    """
    if ctx._in_external_transaction:
        return False
    conn = ctx.connection
    return not (conn is not None and conn.in_transaction() and ctx._transaction is None)
