"""After a rule's batches: what the log says was done, and what still violates now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from ..pg import raw
from ..pg.identifiers import quote
from .batch import Batch
from .log import (
    BATCH_SETTINGS,
    CHANGE_ACTIONS,
    CHANGES_SQL,
    SAMPLE,
    format_key,
    lit,
    transaction,
)
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
        batch.analyze()  # the scan looks each violating row up in the log and images
        t = target.table
        if t.pk:  # the key columns only: the images' other columns are never looked up
            keys = ", ".join(quote(c) for c in ("_ai_repair_id", "_ai_batch", *t.pk))
            raw.execute(conn, f"ANALYZE {batch.log.image_sql(batch.log.image_name(t))} ({keys})")
        with transaction(conn, read_only=True):
            raw.execute(conn, BATCH_SETTINGS)
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
            "SELECT policy_index, action, note, sum(rows), "
            f"(array_agg(pk ORDER BY log_id) {noted})[1:{SAMPLE}], "
            f"(array_agg(detail ORDER BY log_id) {noted})[1:{SAMPLE}] FROM {batch.log.log_sql} "
            f"WHERE repair_id = {int(batch.repair_id)} AND rule = {lit(target.rule_id)} "
            "GROUP BY 1, 2, 3 HAVING sum(rows) > 0 ORDER BY 1, 2, 3"
        ).all())


def _may_leave_rows(plans: Sequence[PolicyPlan], batch: Batch, logged: Sequence[Any]) -> bool:
    """Whether a last scan is needed to tell what still violates.

    It is not when every violating row had a writing policy (no Manual, the
    last policy has no ``where``), every change fixed its row, nothing was
    refused, every row a batch took was changed (none was changed meanwhile by
    another session) and the run was not resumed: the batches then took every
    row in scope, in key order, to the end of the table, and the counts are
    proven. Skipping that scan keeps a repair close to the cost of the plain
    UPDATE/DELETE; ``remaining`` stays None (not counted). Rows written
    meanwhile by others behind the cursor are then not reported; VALIDATE or
    the audit will see them.
    """
    takes_all = bool(plans) and plans[-1].policy.where is None
    all_write = all(p.writes for p in plans)
    noted = any(action not in CHANGE_ACTIONS for _, action, *_ in logged)
    return not (takes_all and all_write and not noted and not batch.still
                and not batch.skipped and not batch.resumed)


def _still_sql(target: Target, batch: Batch) -> str:
    """Violating rows now, by policy and by whether the log knows them."""
    t = target.table
    status = "NULL::text"
    if t.pk:
        log = batch.log
        image = log.image_sql(log.image_name(t))
        mine = (f"SELECT ai_s.batch FROM {log.log_sql} ai_s WHERE ai_s.repair_id = "
                f"{int(batch.repair_id)} AND ai_s.rule = {lit(target.rule_id)} "
                f"AND ai_s.action IN {CHANGES_SQL}")
        status = (f"CASE WHEN EXISTS (SELECT 1 FROM {image} ai_i WHERE ai_i._ai_repair_id = "
                  f"{int(batch.repair_id)} AND {t.pk_match('ai_i', 't')} AND ai_i._ai_batch IN "
                  f"({mine})) THEN 'changed' WHEN NOT "
                  f"{log.not_noted(batch.repair_id, t, target.rule_id, t.pk_json('t'))} "
                  "THEN 'noted' END")
    return (f"SELECT _ai_idx, _ai_logged, count(*), (array_agg(_ai_pk ORDER BY _ai_pk))"
            f"[1:{SAMPLE}] FROM (SELECT {target.partition()} AS _ai_idx, {status} AS _ai_logged, "
            f"{t.pk_json('t')} AS _ai_pk FROM {t.scan} AS t WHERE {target.violation}) s "
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
