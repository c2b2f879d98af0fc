"""Invalidate and SetValue: rows fixed in place by one UPDATE per batch."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigurationError
from ...pg.identifiers import quote
from ...rules.policies import Invalidate, SetValue, Sql
from ..batch import Batch
from ..log import new_column
from .base import PolicyPlan, rule_column


class UpdatePlan(PolicyPlan):
    """Invalidate and SetValue: one UPDATE per batch; the image is the key, the old
    values of the changed columns and their new values."""

    def assignments(self) -> str:
        raise NotImplementedError

    def validation_sql(self) -> list[str]:
        return [*super().validation_sql(),
                f"UPDATE {self.table.scan} AS t SET {self.assignments()} WHERE false"]

    def old_values(self) -> str:
        return "".join(f", t.{quote(c)} AS _ai_o{i}" for i, c in enumerate(self.changed_columns))

    def image_columns(self, source: str) -> list[tuple[str, str]]:
        """(image column, value) of an updated row: key, old and new changed values."""
        keys = [(c, f"p._ai_k{i}") for i, c in enumerate(self.table.pk)]
        old = [(c, f"p._ai_o{i}") for i, c in enumerate(self.changed_columns)]
        new = [(new_column(c), f"{source}._ai_n{i}") for i, c in enumerate(self.changed_columns)]
        return keys + old + new

    def returning(self) -> str:
        """Key as ``quote(c)`` names, new values of the changed columns, still violating?"""
        keys = ", ".join(f"t.{quote(c)} AS {quote(c)}" for c in self.table.pk)
        new = "".join(f", t.{quote(c)} AS _ai_n{i}" for i, c in enumerate(self.changed_columns))
        return f"{keys}{new}, {self.target.violation} AS _ai_still"

    def batch_sql(self, batch: Batch) -> str:
        t = self.table
        source, where = self.picked_rows("ai_picked")
        source = f" FROM {source}" if source else ""
        changed = (f"UPDATE {t.scan} AS t SET {self.assignments()}{source} WHERE {where} "
                   f"RETURNING {self.returning()}")
        # The old values come from the pick: the same row version (same ctid).
        images = self.insert_images(batch, t, "update",
                                    f"ai_changed c JOIN ai_picked p ON {self.key_join('c', 'p')}",
                                    self.image_columns("c"))
        logged = self.insert_log(batch, [
            self.log_row(batch, t, "'update'", rows="(SELECT count(*) FROM ai_changed)",
                         image=True, columns=self.changed_columns, cursor=self.cursor_sql())
            + " WHERE EXISTS (SELECT 1 FROM ai_next)"])
        return (f"WITH {self.batch_number(batch)}, {self.pick_ctes(batch, self.old_values())}, "
                f"ai_changed AS ({changed}), ai_images AS ({images}), logged AS ({logged}) "
                f"{self.counted('ai_changed')}")


class InvalidatePlan(UpdatePlan):
    policy: Invalidate

    def check(self) -> None:
        self.assignments()
        super().check()

    @property
    def changed_columns(self) -> tuple[str, ...]:
        return tuple(self.policy.values)

    def assignments(self) -> str:
        if not self.policy.values:
            raise ConfigurationError(f"{self.target.rule_id}: Invalidate needs values={{...}}")
        return ", ".join(f"{quote(column)} = {self._value_sql(i, value)}"
                         for i, (column, value) in enumerate(self.policy.values.items()))

    def _value_sql(self, i: int, value: Any) -> str:
        return str(value) if isinstance(value, Sql) else self.bind(f"v{i}", value)


class SetValuePlan(UpdatePlan):
    policy: SetValue

    def check(self) -> None:
        self.assignments()
        super().check()

    @property
    def column(self) -> str:
        column = self.policy.column or rule_column(self.target.rule)
        if column is None:
            raise ConfigurationError(
                f"{self.target.rule_id}: SetValue needs column=... (only NOT NULL rules and "
                "single-column foreign keys have a column of their own)"
            )
        return column

    @property
    def changed_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def assignments(self) -> str:
        value = self.policy.expression if self.policy.expression is not None \
            else self.bind("value", self.policy.value)
        return f"{quote(self.column)} = {value}"
