"""After a rule's batches: what the log says was done, and what still violates now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from ..pg import raw
from .batch import Batch
from .log import CHANGE_ACTIONS, CHANGES_SQL, SAMPLE, format_key, lit, transaction
from .plans import NO_PRIMARY_KEY, ManualPlan, PolicyPlan
from .result import PolicyOutcome, RuleOutcome, key_samples
from .tables import Target
from .targets import query

APPEARED = "violates now but was not seen by the repair (changed meanwhile); run it again"


def summarise(conn: Connection, target: Target, batch: Batch) -> RuleOutcome:
    """The rule's outcome: what the log says was done, plus what still violates now."""
    outcome = RuleOutcome(target.rule_id, target.rule.kind, target.table.label)
    plans = target.plans()
    outcome.policies = [PolicyOutcome(p.index, p.policy.kind, p.description) for p in plans]
    logged = batch.tallied(target.rule_id)
    if logged is None:
        logged = _read_log(conn, target, batch)
    counted_now = _may_leave_rows(plans, batch, logged)
    now: list[Any] = []
    if counted_now:
        batch.index_log()  # the scan looks each violating row up in the log
        batch.analyze()
        with transaction(conn, read_only=True):
            now = query(conn, target, _still_sql(target, batch)).all()
    for index, action, note, count, keys, details in logged:
        if 0 <= index < len(plans):
            outcome.policies[index].add(action, note, int(count), key_samples(keys, details))
    if counted_now:
        _add_current(outcome, plans, now)
    outcome.violating = sum(p.changed + p.refused + p.ambiguous + p.left
                            for p in outcome.policies) + outcome.unmatched
    return outcome


def _read_log(conn: Connection, target: Target, batch: Batch) -> list[Any]:
    """The rule's log rows of this repair by policy, action and note, with samples."""
    noted = f"FILTER (WHERE action NOT IN {CHANGES_SQL})"
    with transaction(conn, read_only=True):
        return list(raw.execute(conn,
            "SELECT policy_index, action, note, count(*), "
            f"(array_agg(pk ORDER BY log_id) {noted})[1:{SAMPLE}], "
            f"(array_agg(detail ORDER BY log_id) {noted})[1:{SAMPLE}] FROM {batch.log.log_sql} "
            f"WHERE repair_id = {int(batch.repair_id)} AND rule = {lit(target.rule_id)} "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).all())


def _may_leave_rows(plans: Sequence[PolicyPlan], batch: Batch, logged: Sequence[Any]) -> bool:
    """Whether a last scan is needed to tell what still violates.

    It is not when every violating row had a writing policy (no Manual, the
    last policy has no ``where``), every change fixed its row, nothing was
    refused and the run was not resumed: the batches then saw every row in
    scope to the end of the table. Skipping that scan keeps a repair close to
    the cost of the plain UPDATE/DELETE; ``remaining`` stays None (not counted).
    Rows written meanwhile by others are then not reported; VALIDATE or the
    audit will see them.
    """
    takes_all = bool(plans) and plans[-1].policy.where is None
    all_write = all(p.writes for p in plans)
    noted = any(action not in CHANGE_ACTIONS for _, action, *_ in logged)
    return not (takes_all and all_write and not noted and not batch.still
                and not batch.resumed)


def _still_sql(target: Target, batch: Batch) -> str:
    """Violating rows now, by policy and by whether the log knows them."""
    t = target.table
    status = "NULL::text"
    if t.pk:
        status = (f"(SELECT CASE WHEN count(*) = 0 THEN NULL WHEN bool_or(ai_l.action IN "
                  f"{CHANGES_SQL}) THEN 'changed' ELSE 'noted' END FROM {batch.log.log_sql} ai_l "
                  f"WHERE ai_l.repair_id = {int(batch.repair_id)} AND ai_l.schema_name = "
                  f"{lit(t.schema)} AND ai_l.table_name = {lit(t.name)} AND ai_l.pk = "
                  f"{t.pk_json('t')} AND ai_l.rule = {lit(target.rule_id)})")
    return (f"SELECT _ai_idx, _ai_logged, count(*), (array_agg(_ai_pk ORDER BY _ai_pk))"
            f"[1:{SAMPLE}] FROM (SELECT {target.partition()} AS _ai_idx, {status} AS _ai_logged, "
            f"{t.pk_json('t')} AS _ai_pk FROM {t.sql} AS t WHERE {target.violation}) s "
            "GROUP BY 1, 2")


def _add_current(outcome: RuleOutcome, plans: Sequence[PolicyPlan],
                 rows: Sequence[Any]) -> None:
    outcome.remaining = sum(int(r[2]) for r in rows)
    for index, status, count, keys in rows:
        samples = [format_key(k) for k in keys or []]
        count = int(count)
        if status == "noted":
            continue  # refused/ambiguous/left: already counted from the log
        if status == "changed":
            outcome.still_violating += count
            outcome.still_samples.extend(samples[: SAMPLE - len(outcome.still_samples)])
        elif index < 0:
            outcome.unmatched += count
            outcome.unmatched_samples.extend(samples[: SAMPLE - len(outcome.unmatched_samples)])
        else:
            plan = plans[index]
            policy = outcome.policies[index]
            if isinstance(plan, ManualPlan):
                policy.add("left", plan.policy.reason, count, samples)
            elif not plan.writes:
                policy.add("refused", NO_PRIMARY_KEY, count, samples)
            else:
                policy.add("left", APPEARED, count, samples)
