"""Invalidate and SetValue: rows fixed in place by one UPDATE per batch."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigurationError
from ...pg.identifiers import quote
from ...rules.policies import Invalidate, SetValue, Sql
from ..batch import Batch
from ..log import lit
from .base import PolicyPlan, rule_column


class UpdatePlan(PolicyPlan):
    """Invalidate and SetValue: one UPDATE per batch, before- and after-image logged."""

    def assignments(self) -> str:
        raise NotImplementedError

    def batch_sql(self, batch: Batch, after: str) -> str:
        t = self.table
        picked = (f"SELECT t.ctid AS _ai_tid, to_jsonb(t) AS _ai_before FROM {t.sql} AS t "
                  f"WHERE {self.pick(batch, after)} LIMIT {int(batch.size)}")
        changed = (f"UPDATE {t.sql} AS t SET {self.assignments()} FROM ai_picked "
                   "WHERE t.ctid = ai_picked._ai_tid "
                   "AND t.ctid = ANY(ARRAY(SELECT _ai_tid FROM ai_picked)) "
                   f"RETURNING {t.pk_json('t')} AS pk, ai_picked._ai_before AS before, "
                   f"to_jsonb(t) AS after, {self.target.violation} AS _ai_still")
        logged = self.insert_log(batch, [
            self.log_row(batch, t, "'update'", "c.pk", "c.before", "c.after") + " FROM ai_changed c"
        ])
        return (f"WITH ai_picked AS ({picked}), ai_changed AS ({changed}), "
                f"logged AS ({logged}) {self.counted('ai_changed')}")


class InvalidatePlan(UpdatePlan):
    policy: Invalidate

    def check(self) -> None:
        self.assignments()

    def assignments(self) -> str:
        if not self.policy.values:
            raise ConfigurationError(f"{self.target.rule_id}: Invalidate needs values={{...}}")
        return ", ".join(f"{quote(column)} = {_value_sql(value)}"
                         for column, value in self.policy.values.items())


class SetValuePlan(UpdatePlan):
    policy: SetValue

    def check(self) -> None:
        self.assignments()

    def assignments(self) -> str:
        column = self.policy.column or rule_column(self.target.rule)
        if column is None:
            raise ConfigurationError(
                f"{self.target.rule_id}: SetValue needs column=... (only NOT NULL rules and "
                "single-column foreign keys have a column of their own)"
            )
        value = self.policy.expression if self.policy.expression is not None \
            else lit(self.policy.value)
        return f"{quote(column)} = {value}"


def _value_sql(value: Any) -> str:
    return str(value) if isinstance(value, Sql) else lit(value)
