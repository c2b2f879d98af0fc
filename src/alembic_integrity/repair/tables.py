"""The catalog side of a repair: tables, the foreign keys onto them, and rules resolved.

A :class:`Target` is a rule resolved against the database: its table and the
SQL that splits its violating rows among its policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..pg import catalog
from ..pg.identifiers import TableName, quote
from ..rules.kinds import ForeignKeyRule, NotNullRule, Rule
from ..rules.policies import Policy
from .log import TableInfo, load_table
from .plans import PolicyPlan, plan_for


@dataclass(frozen=True)
class Referrer:
    """Rows of ``child`` that point at the table: a foreign key, in the catalog or declared."""

    name: str
    child: TableInfo
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]

    def match(self, child: str, parent: str) -> str:
        return " AND ".join(f"{child}.{quote(c)} = {parent}.{quote(p)}"
                            for c, p in zip(self.columns, self.parent_columns, strict=True))

    def exists(self, parent: str, child: str = "ai_c") -> str:
        return f"EXISTS (SELECT 1 FROM {self.child.sql} {child} WHERE {self.match(child, parent)})"

    @property
    def label(self) -> str:
        return f"{self.child.label}.{'/'.join(self.columns)} ({self.name})"


class Tables:
    """Catalog look-ups of one run, cached: tables and the foreign keys pointing at them."""

    def __init__(self, conn: Connection, declared_fks: Sequence[ForeignKeyRule]) -> None:
        self.conn = conn
        self.declared_fks = declared_fks
        self._tables: dict[int, TableInfo] = {}
        self._referrers: dict[int, list[Referrer]] = {}

    def table(self, oid: int) -> TableInfo:
        if oid not in self._tables:
            self._tables[oid] = load_table(self.conn, oid)
        return self._tables[oid]

    def find(self, name: TableName) -> TableInfo | None:
        oid = catalog.table_oid(self.conn, name)
        return self.table(oid) if oid is not None else None

    def units(self, table: TableInfo) -> list[TableInfo]:
        """What a rule on ``table`` repairs, one unit at a time.

        A table with inheritance children is repaired member by member (``ONLY``
        each, with its own key and columns); anything else, a partitioned table
        included, is one unit.
        """
        if table.partitioned:
            return [table]
        children = catalog.inheritance_children(self.conn, table.oid)
        if not children:
            return [table]
        return [load_table(self.conn, oid, only=True) for oid in [table.oid, *children]]

    def referrers(self, table: TableInfo) -> list[Referrer]:
        """Every FK onto ``table``: catalog ones (NOT VALID and self-references included)
        and those the models declare but the database may not have yet."""
        if table.oid not in self._referrers:
            found: dict[tuple[Any, ...], Referrer] = {}
            for ref in [*self._catalog_referrers(table), *self._declared_referrers(table)]:
                found.setdefault((ref.child.oid, ref.columns, ref.parent_columns), ref)
            self._referrers[table.oid] = list(found.values())
        return self._referrers[table.oid]

    def _catalog_referrers(self, table: TableInfo) -> list[Referrer]:
        return [Referrer(ref.name, self.table(ref.child_oid), ref.foreign_key.columns,
                         ref.foreign_key.referent_columns)
                for ref in catalog.referrers(self.conn, table.oid)]

    def _declared_referrers(self, table: TableInfo) -> list[Referrer]:
        found = []
        for fk in self.declared_fks:
            if catalog.table_oid(self.conn, fk.referent) != table.oid:
                continue
            child = self.find(fk.table)
            if child is None or not set(fk.columns) <= set(child.names) \
                    or not set(fk.referent_columns) <= set(table.names):
                continue  # the child table or column does not exist yet: nothing refers
            found.append(Referrer(fk.name, child, tuple(fk.columns), tuple(fk.referent_columns)))
        return found


@dataclass
class Target:
    """A rule resolved against the database: its table and the SQL of its partitions."""

    rule: Rule
    table: TableInfo
    tables: Tables
    _plans: list[PolicyPlan] | None = field(default=None, repr=False)

    @property
    def rule_id(self) -> str:
        """How the log and ``--rule`` name the rule: unique per table."""
        if isinstance(self.rule, NotNullRule):
            return f"{self.table.label}.{self.rule.column} NOT NULL"
        return f"{self.rule.label} on {self.table.label}"

    @property
    def policies(self) -> tuple[Policy, ...]:
        return tuple(self.rule.policies)

    @property
    def violation(self) -> str:
        return f"({self.rule.violation_sql('t')})"

    def where(self, index: int) -> str:
        where = self.policies[index].where
        return f"COALESCE(({where}), false)" if where else "true"

    def scope(self, index: int) -> str:
        """Violating rows this policy takes: its ``where``, and no earlier policy's."""
        earlier = [f"NOT {self.where(i)}" for i in range(index)]
        return " AND ".join([self.violation, self.where(index), *earlier])

    def partition(self) -> str:
        """The index of the policy that takes a violating row, -1 for none."""
        if not self.policies:
            return "-1"
        whens = " ".join(f"WHEN {self.where(i)} THEN {i}" for i in range(len(self.policies)))
        return f"CASE {whens} ELSE -1 END"

    def plans(self) -> list[PolicyPlan]:
        """One plan per policy, built once: their bound values are fixed with them."""
        if self._plans is None:
            self._plans = [plan_for(self, i, p) for i, p in enumerate(self.policies)]
        return self._plans

    @property
    def params(self) -> dict[str, Any]:
        """Every bound value the plans' SQL names (policy values, reasons)."""
        found: dict[str, Any] = {}
        for plan in self.plans():
            found.update(plan.params)
        return found
