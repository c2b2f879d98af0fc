"""One plan per policy family: how each policy classifies its rows and applies in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ConfigurationError
from ...rules.policies import Delete, Invalidate, Manual, Policy, Quarantine, Relink, SetValue
from .base import NO_PRIMARY_KEY, PolicyPlan
from .delete import DeletePlan
from .manual import ManualPlan
from .quarantine import QuarantinePlan
from .relink import NOT_BIJECTIVE, RelinkPlan
from .update import InvalidatePlan, SetValuePlan, UpdatePlan

if TYPE_CHECKING:
    from ..tables import Target

__all__ = [
    "NOT_BIJECTIVE", "NO_PRIMARY_KEY", "DeletePlan", "InvalidatePlan", "ManualPlan",
    "PolicyPlan", "QuarantinePlan", "RelinkPlan", "SetValuePlan", "UpdatePlan", "plan_for",
]

_PLANS: dict[type[Policy], type[PolicyPlan]] = {
    Delete: DeletePlan, Quarantine: QuarantinePlan, Invalidate: InvalidatePlan,
    SetValue: SetValuePlan, Relink: RelinkPlan, Manual: ManualPlan,
}


def plan_for(target: Target, index: int, policy: Policy) -> PolicyPlan:
    for kind, plan in _PLANS.items():
        if isinstance(policy, kind):
            return plan(target, index, policy)
    raise ConfigurationError(f"{target.rule_id}: unknown policy {policy!r}")
