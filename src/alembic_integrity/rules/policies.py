"""Repair policies, declared next to the rule they repair.

Policies are data. ``repair`` turns them into SQL; here they only say what
should happen to a violating row. In every SQL fragment a policy holds
(``where``, ``expression``, ``match``) the violating row is aliased ``t``.

    CheckConstraint("type <> 'IMAGE' OR output_image IS NOT NULL", name="image_output",
                    info=on_violation(Delete(where="..."), Manual("not retried")))
    enabled: Mapped[bool] = mapped_column(info=on_violation(SetValue(expression="DEFAULT")))

Rows that no policy takes are left for a person, as if ``Manual`` ended the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INFO_KEY = "alembic_integrity"


@dataclass(frozen=True)
class Policy:
    """Base: ``where`` narrows the violating rows this policy applies to."""

    where: str | None = field(default=None, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return self.kind + (f" where {self.where}" if self.where else "")


@dataclass(frozen=True)
class Delete(Policy):
    """Delete the row. Rows still referenced through a foreign key are refused
    (reported) unless ``cascade``, which deletes the referencing rows too,
    each with its before-image."""

    cascade: bool = False


@dataclass(frozen=True)
class Invalidate(Policy):
    """Mark the row as no longer current, for append-only tables: an UPDATE of flag columns.

    ``values`` maps column to a Python value, or to :class:`Sql` for an expression.
    """

    values: dict[str, Any] = field(default_factory=lambda: {"invalidated": True})


@dataclass(frozen=True)
class SetValue(Policy):
    """Set one column to ``value`` (a Python value) or ``expression`` (SQL, e.g. ``DEFAULT``).

    ``column`` defaults to the rule's column for NOT NULL rules.
    """

    column: str | None = None
    value: Any = None
    expression: str | None = None


@dataclass(frozen=True)
class Relink(Policy):
    """Fill a missing reference from ``match``: a SELECT, correlated with ``t``, returning
    the candidate key. Writes nothing unless every row has one candidate and no
    candidate is claimed twice (a one-to-one bijection)."""

    column: str = ""
    match: str = ""


@dataclass(frozen=True)
class Quarantine(Policy):
    """Move the row to an archive table of the same shape (default ``<table>_quarantine``)."""

    archive: str | None = None
    archive_schema: str | None = None


@dataclass(frozen=True)
class Manual(Policy):
    """Report only: a person decides."""

    reason: str = "left for a person"


class Sql(str):
    """A value in :class:`Invalidate` that is SQL, not a literal."""


def on_violation(*policies: Policy) -> dict[str, tuple[Policy, ...]]:
    """``info=`` for a column, CHECK or foreign key: the ordered policies for its violations."""
    for policy in policies:
        if not isinstance(policy, Policy):
            raise TypeError(f"on_violation() takes Policy objects, not {policy!r}")
    return {INFO_KEY: tuple(policies)}


@dataclass(frozen=True)
class Expectation:
    """A rule the audit enforces but no constraint can (e.g. it depends on ``now()``).

    ``condition`` holds for good rows, like a CHECK; declare it in the table's
    ``info`` with :func:`expect`.
    """

    name: str
    condition: str
    policies: tuple[Policy, ...] = ()


def expect(*expectations: Expectation) -> dict[str, tuple[Expectation, ...]]:
    """``info=`` for a table (``__table_args__``): its audit-only expectations."""
    return {INFO_KEY: tuple(expectations)}
