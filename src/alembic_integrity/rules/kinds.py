"""The three kinds of rule the toolkit enforces, as plain values.

A rule knows its SQL: how to add it, and which rows break it. Operations,
the audit and the repair all speak in these terms, so a predicate is written
once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..pg.identifiers import TableName, check_length, quote, truncated_name

FK_ACTIONS = {
    "NO ACTION": "a",
    "RESTRICT": "r",
    "CASCADE": "c",
    "SET NULL": "n",
    "SET DEFAULT": "d",
}


@dataclass(frozen=True)
class CheckRule:
    name: str
    table: TableName
    condition: str
    policies: tuple[Any, ...] = field(default=(), compare=False)

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
        """The helper CHECK that carries the rule while it is validated."""
        return truncated_name(f"{self.table.name}_{self.column}", "_not_null")

    @property
    def condition(self) -> str:
        return f"{quote(self.column)} IS NOT NULL"

    def as_check(self) -> CheckRule:
        return CheckRule(self.name, self.table, self.condition)

    def violation_sql(self, alias: str = "t") -> str:
        return f"{quote(self.column)} IS NULL"

    @property
    def label(self) -> str:
        return f"{self.table.name}.{self.column} NOT NULL"


@dataclass(frozen=True)
class ForeignKeyRule:
    name: str
    table: TableName
    columns: tuple[str, ...]
    referent: TableName
    referent_columns: tuple[str, ...]
    ondelete: str | None = None
    onupdate: str | None = None
    policies: tuple[Any, ...] = field(default=(), compare=False)

    kind = "foreign_key"

    def __post_init__(self) -> None:
        check_length(self.name, "constraint name")
        if len(self.columns) != len(self.referent_columns) or not self.columns:
            raise ValueError(f"foreign key {self.name}: local and remote column lists differ")
        for action in (self.ondelete, self.onupdate):
            if action is not None and action.upper() not in FK_ACTIONS:
                raise ValueError(f"foreign key {self.name}: unknown action {action!r}")

    def add_sql(self) -> str:
        local = ", ".join(quote(c) for c in self.columns)
        remote = ", ".join(quote(c) for c in self.referent_columns)
        sql = (f"ALTER TABLE {self.table.sql} ADD CONSTRAINT {quote(self.name)} "
               f"FOREIGN KEY ({local}) REFERENCES {self.referent.sql} ({remote})")
        if self.ondelete:
            sql += f" ON DELETE {self.ondelete.upper()}"
        if self.onupdate:
            sql += f" ON UPDATE {self.onupdate.upper()}"
        return sql + " NOT VALID"

    def violation_sql(self, alias: str = "t") -> str:
        """MATCH SIMPLE: a row with any NULL key column passes."""
        present = " AND ".join(f"{alias}.{quote(c)} IS NOT NULL" for c in self.columns)
        joined = " AND ".join(
            f"r.{quote(rc)} = {alias}.{quote(c)}"
            for c, rc in zip(self.columns, self.referent_columns, strict=True)
        )
        return f"({present} AND NOT EXISTS (SELECT 1 FROM {self.referent.sql} r WHERE {joined}))"

    @property
    def label(self) -> str:
        return self.name

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


def drop_constraint_sql(table: TableName, name: str) -> str:
    return f"ALTER TABLE {table.sql} DROP CONSTRAINT IF EXISTS {quote(name)}"


def validate_sql(table: TableName, name: str) -> str:
    return f"ALTER TABLE {table.sql} VALIDATE CONSTRAINT {quote(name)}"
