"""Manual: nothing is written; the rows are left for a person with the reason."""

from __future__ import annotations

from ...rules.policies import Manual
from .base import PolicyPlan


class ManualPlan(PolicyPlan):
    """Report only: the rows are left for a person with the policy's reason."""

    policy: Manual

    @property
    def writes(self) -> bool:
        return False

    def classify_sql(self, extra: str = "true") -> str:
        return self._rows_as("'left'", self.bind("reason", self.policy.reason), extra)

    def privileges(self) -> list[tuple[str, str]]:
        return []

