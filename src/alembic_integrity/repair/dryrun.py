"""The dry run: every count from one snapshot, in a READ ONLY transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from .log import CHANGES_SQL, SAMPLE, format_key, transaction
from .plans import PolicyPlan
from .result import PolicyOutcome, RepairResult, RuleOutcome, key_samples
from .tables import Target
from .targets import query


def dry_run(conn: Connection, targets: Sequence[Target], result: RepairResult) -> None:
    """Every count from one snapshot, in a READ ONLY transaction: nothing can be written."""
    with transaction(conn, read_only=True):
        for target in targets:
            result.rules.append(_plan_rule(conn, target))


def _plan_rule(conn: Connection, target: Target) -> RuleOutcome:
    outcome = RuleOutcome(target.rule_id, target.rule.kind, target.table.label)
    pk = target.table.pk_json("t")
    total, unmatched, samples = query(conn, target,
        f"SELECT count(*), count(*) FILTER (WHERE _ai_idx < 0), (array_agg(_ai_pk ORDER BY "
        f"_ai_pk) FILTER (WHERE _ai_idx < 0))[1:{SAMPLE}] FROM (SELECT {target.partition()} "
        f"AS _ai_idx, {pk} AS _ai_pk FROM {target.table.scan} AS t WHERE {target.violation}) s"
    ).one()
    outcome.violating, outcome.unmatched = int(total), int(unmatched)
    outcome.unmatched_samples = [format_key(k) for k in samples or []]
    for plan in target.plans():
        policy = PolicyOutcome(plan.index, plan.policy.kind, plan.description)
        outcome.policies.append(policy)
        if outcome.violating:
            _count_plan(conn, plan, policy)
    return outcome


def _count_plan(conn: Connection, plan: PolicyPlan, policy: PolicyOutcome) -> None:
    rows = query(conn, plan.target,
        "SELECT _ai_action, _ai_note, count(*), COALESCE(sum(_ai_kids), 0), "
        f"(array_agg(_ai_pk ORDER BY _ai_pk) FILTER (WHERE _ai_action NOT IN {CHANGES_SQL}))"
        f"[1:{SAMPLE}], (array_agg(_ai_detail ORDER BY _ai_pk) FILTER (WHERE _ai_action NOT IN "
        f"{CHANGES_SQL}))[1:{SAMPLE}] FROM ({plan.classify_sql()}) c GROUP BY 1, 2",
        f"planning {plan.description}",
    ).all()
    for action, note, count, kids, keys, details in rows:
        policy.add(action, note, int(count), key_samples(keys, details))
        policy.cascaded += int(kids)
