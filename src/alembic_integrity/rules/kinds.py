"""The three kinds of rule the toolkit enforces, as plain values.

A rule knows its SQL: how to add it, and which rows break it. Operations,
the audit and the repair all speak in these terms, so a predicate is written
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..pg.identifiers import (
    MAX_IDENTIFIER_BYTES,
    TableName,
    check_length,
    quote,
    truncated_name,
)

FK_ACTIONS = {
    "NO ACTION": "a",
    "RESTRICT": "r",
    "CASCADE": "c",
    "SET NULL": "n",
    "SET DEFAULT": "d",
}
FK_MATCH = {"SIMPLE": "s", "FULL": "f", "PARTIAL": "p"}
FK_INITIALLY = ("IMMEDIATE", "DEFERRED")


@dataclass(frozen=True)
class CheckRule:
    """A CHECK. ``named=False``: the models gave it no name, so ``name`` is the one
    PostgreSQL would choose (see :func:`default_check_name`) and the live constraint
    is found by its normalised definition, whatever it is called."""

    name: str
    table: TableName
    condition: str
    policies: tuple[Any, ...] = field(default=(), compare=False)
    named: bool = True

    kind = "check"

    def __post_init__(self) -> None:
        check_length(self.name, "constraint name")

    def add_sql(self) -> str:
        return (f"ALTER TABLE {self.table.sql} ADD CONSTRAINT {quote(self.name)} "
                f"CHECK ({self.condition}) NOT VALID")

    def violation_sql(self, alias: str = "t") -> str:
        """True for rows that VALIDATE would reject (a NULL result passes a CHECK)."""
        return f"NOT ({self.condition})"

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class NotNullRule:
    table: TableName
    column: str
    policies: tuple[Any, ...] = field(default=(), compare=False)

    kind = "not_null"

    def __post_init__(self) -> None:
        check_length(self.column, "column name")

    @property
    def name(self) -> str:
        """PostgreSQL's own name for the column's NOT NULL (18+: the constraint we add)."""
        return truncated_name(f"{self.table.name}_{self.column}", "_not_null")

    @property
    def helper_name(self) -> str:
        """The helper CHECK that carries the rule while it is validated (before 18).

        It ends in ``_nn_helper``, a suffix PostgreSQL never gives a constraint
        (its own end in ``_check``, ``_not_null``, ``_key``, ``_pkey``,
        ``_fkey`` or ``_excl``, maybe followed by digits), so it cannot collide
        with the name PostgreSQL 18 picks for the NOT NULL itself.
        """
        return truncated_name(f"{self.table.name}_{self.column}", "_nn_helper")

    @property
    def legacy_helper_name(self) -> str:
        """The helper's name in earlier releases; a run that stopped then resumes from it."""
        return self.name

    @property
    def condition(self) -> str:
        return f"{quote(self.column)} IS NOT NULL"

    def as_check(self, name: str | None = None) -> CheckRule:
        return CheckRule(name or self.helper_name, self.table, self.condition)

    def add_native_sql(self) -> str:
        """PostgreSQL 18+: the NOT NULL itself, NOT VALID, under its default name."""
        return (f"ALTER TABLE {self.table.sql} ADD CONSTRAINT {quote(self.name)} "
                f"NOT NULL {quote(self.column)} NOT VALID")

    def violation_sql(self, alias: str = "t") -> str:
        return f"{quote(self.column)} IS NULL"

    @property
    def label(self) -> str:
        return f"{self.table.name}.{self.column} NOT NULL"


@dataclass(frozen=True)
class ForeignKeyRule:
    """A FOREIGN KEY with its full semantics: actions, MATCH type and timing.

    ``named=False``: the models gave it no name, so ``name`` is the one
    PostgreSQL would choose (``<table>_<columns>_fkey``) and the live constraint
    is found by its structure (:attr:`structure`), whatever it is called.
    """

    name: str
    table: TableName
    columns: tuple[str, ...]
    referent: TableName
    referent_columns: tuple[str, ...]
    ondelete: str | None = None
    onupdate: str | None = None
    policies: tuple[Any, ...] = field(default=(), compare=False)
    deferrable: bool | None = None
    initially: str | None = None
    match: str | None = None
    named: bool = True

    kind = "foreign_key"

    def __post_init__(self) -> None:
        check_length(self.name, "constraint name")
        if len(self.columns) != len(self.referent_columns) or not self.columns:
            raise ValueError(f"foreign key {self.name}: local and remote column lists differ")
        for action in (self.ondelete, self.onupdate):
            if action is not None and action.upper() not in FK_ACTIONS:
                raise ValueError(f"foreign key {self.name}: unknown action {action!r}")
        if self.match is not None and self.match.upper() not in FK_MATCH:
            raise ValueError(f"foreign key {self.name}: unknown MATCH type {self.match!r}")
        if self.initially is not None and self.initially.upper() not in FK_INITIALLY:
            raise ValueError(f"foreign key {self.name}: INITIALLY must be IMMEDIATE or "
                             f"DEFERRED, not {self.initially!r}")

    def add_sql(self) -> str:
        return (f"ALTER TABLE {self.table.sql} ADD CONSTRAINT {quote(self.name)} "
                f"{self.definition_sql()} NOT VALID")

    def definition_sql(self) -> str:
        """``FOREIGN KEY (...) REFERENCES ...`` in PostgreSQL's clause order."""
        local = ", ".join(quote(c) for c in self.columns)
        remote = ", ".join(quote(c) for c in self.referent_columns)
        sql = f"FOREIGN KEY ({local}) REFERENCES {self.referent.sql} ({remote})"
        if self.match_code != "s":
            sql += f" MATCH {(self.match or '').upper()}"
        if self.ondelete:
            sql += f" ON DELETE {self.ondelete.upper()}"
        if self.onupdate:
            sql += f" ON UPDATE {self.onupdate.upper()}"
        if self.is_deferrable:
            sql += " DEFERRABLE"
            if self.is_deferred:
                sql += " INITIALLY DEFERRED"
        return sql

    def violation_sql(self, alias: str = "t") -> str:
        """Rows VALIDATE would reject.

        MATCH SIMPLE: a row with any NULL key column passes. MATCH FULL: a row
        with all key columns NULL passes, one with some NULL and some set fails.
        """
        present = " AND ".join(f"{alias}.{quote(c)} IS NOT NULL" for c in self.columns)
        joined = " AND ".join(
            f"r.{quote(rc)} = {alias}.{quote(c)}"
            for c, rc in zip(self.columns, self.referent_columns, strict=True)
        )
        missing = f"({present} AND NOT EXISTS (SELECT 1 FROM {self.referent.sql} r WHERE {joined}))"
        if self.match_code != "f" or len(self.columns) == 1:
            return missing
        some_null = " OR ".join(f"{alias}.{quote(c)} IS NULL" for c in self.columns)
        return f"({missing} OR (({some_null}) AND NOT ({_all_null(alias, self.columns)})))"

    @property
    def label(self) -> str:
        return self.name

    @property
    def match_code(self) -> str:
        return FK_MATCH[(self.match or "SIMPLE").upper()]

    @property
    def is_deferred(self) -> bool:
        return (self.initially or "IMMEDIATE").upper() == "DEFERRED"

    @property
    def is_deferrable(self) -> bool:
        """INITIALLY DEFERRED implies DEFERRABLE, as in PostgreSQL."""
        return bool(self.deferrable) or self.is_deferred

    @property
    def structure(self) -> tuple[Any, ...]:
        """What makes two foreign keys the same constraint, whatever their names."""
        return (self.table, self.columns, self.referent, self.referent_columns,
                self.ondelete_code, self.onupdate_code, self.match_code, self.is_deferrable,
                self.is_deferred)

    @property
    def ondelete_code(self) -> str:
        return FK_ACTIONS[(self.ondelete or "NO ACTION").upper()]

    @property
    def onupdate_code(self) -> str:
        return FK_ACTIONS[(self.onupdate or "NO ACTION").upper()]


@dataclass(frozen=True)
class ExpectRule:
    """An audit-only rule: checked and repaired, never a constraint in the database."""

    name: str
    table: TableName
    condition: str
    policies: tuple[Any, ...] = field(default=(), compare=False)

    kind = "expectation"

    def violation_sql(self, alias: str = "t") -> str:
        return f"NOT ({self.condition})"

    @property
    def label(self) -> str:
        return self.name


Rule = CheckRule | NotNullRule | ForeignKeyRule | ExpectRule


def _all_null(alias: str, columns: tuple[str, ...]) -> str:
    return " AND ".join(f"{alias}.{quote(c)} IS NULL" for c in columns)


def pg_object_name(name1: str, name2: str | None, label: str) -> str:
    """The name PostgreSQL builds for an unnamed constraint (``makeObjectName``).

    Both parts are shortened, the longer first, until ``name1_name2_label`` fits
    in 63 bytes. PostgreSQL adds a digit when the name is taken; that case is
    found by structure anyway.
    """
    overhead = len(label.encode()) + 1 + (1 if name2 else 0)
    room = MAX_IDENTIFIER_BYTES - overhead
    one, two = name1.encode(), (name2 or "").encode()
    n1, n2 = len(one), len(two)
    while n1 + n2 > room:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    parts = [one[:n1].decode(errors="ignore")]
    if name2:
        parts.append(two[:n2].decode(errors="ignore"))
    return "_".join([*parts, label])


def default_foreign_key_name(table: str, columns: tuple[str, ...]) -> str:
    """``<table>_<col>_<col>_fkey``, as PostgreSQL names an unnamed FOREIGN KEY."""
    return pg_object_name(table, "_".join(columns), "fkey")


def default_check_name(table: str, columns: list[str]) -> str:
    """``<table>_<col>_check`` when the predicate uses one column, else ``<table>_check``."""
    distinct = list(dict.fromkeys(columns))
    return pg_object_name(table, distinct[0] if len(distinct) == 1 else None, "check")


def drop_constraint_sql(table: TableName, name: str) -> str:
    return f"ALTER TABLE {table.sql} DROP CONSTRAINT IF EXISTS {quote(name)}"


def validate_sql(table: TableName, name: str) -> str:
    return f"ALTER TABLE {table.sql} VALIDATE CONSTRAINT {quote(name)}"
