"""Relink: a missing reference filled from a match, only where it is one-to-one."""

from __future__ import annotations

from ...errors import ConfigurationError
from ...pg import raw
from ...pg.identifiers import quote
from ...rules.policies import Relink
from ..batch import Batch
from ..log import lit, transaction
from .base import PolicyPlan, rule_column

NOT_BIJECTIVE = "not relinked: the match over this policy's rows is not one-to-one"


class RelinkPlan(PolicyPlan):
    """Fill a missing reference from ``match``, only where the match is one-to-one.

    The whole scope is judged first: when any row has two or more candidates,
    a candidate is claimed by two rows, or a candidate is already referenced
    through this column by another row of the table (one-to-one: a candidate
    links to one row only), nothing is written for this policy and every row
    is left for a person. Rows with no candidate are left for a person either
    way. Each batch judges its own rows again, so a change made meanwhile
    cannot make two rows claim one candidate.
    """

    policy: Relink

    @property
    def column(self) -> str:
        column = self.policy.column or rule_column(self.target.rule)
        if not column:
            raise ConfigurationError(f"{self.target.rule_id}: Relink needs column=...")
        if not self.policy.match:
            raise ConfigurationError(f"{self.target.rule_id}: Relink needs match='SELECT ...'")
        return column

    def _judge(self, source: str, claims: str) -> str:
        """A CASE naming why a candidate row of ``source`` may not be relinked."""
        taken = (f"EXISTS (SELECT 1 FROM {self.table.sql} ai_o WHERE ai_o.{quote(self.column)} "
                 f"= {source}._ai_cands[1] AND ai_o.ctid <> {source}._ai_tid)")
        return (f"CASE WHEN cardinality({source}._ai_cands) = 0 THEN 'no candidate' "
                f"WHEN cardinality({source}._ai_cands) > 1 THEN 'more than one candidate' "
                f"WHEN {claims} > 1 THEN 'candidate claimed by another row too' "
                f"WHEN {taken} THEN 'candidate already referenced by another row' END")

    def _candidates(self, extra: str, lock: str = "") -> str:
        t = self.table
        return (f"SELECT t.ctid AS _ai_tid, {t.pk_json('t')} AS _ai_pk, "
                f"to_jsonb(t) AS _ai_before, ARRAY({self.policy.match}) AS _ai_cands "
                f"FROM {t.sql} AS t WHERE {self.scope} AND {extra}{lock}")

    def _classify(self, extra: str) -> str:
        claims = ("(SELECT ai_cl.n FROM ai_claims ai_cl "
                  "WHERE ai_cl.cand = ai_m._ai_cands[1])")
        judged = (f"SELECT ai_m.*, {self._judge('ai_m', claims)} AS _ai_note FROM ai_m")
        return (
            f"WITH ai_m AS ({self._candidates(extra)}), "
            "ai_claims AS (SELECT u.cand, count(*) AS n FROM ai_m, "
            "unnest(ai_m._ai_cands) AS u(cand) GROUP BY u.cand), "
            f"ai_j AS ({judged}), "
            "ai_b AS (SELECT ai_j.*, count(*) FILTER (WHERE _ai_note IS NOT NULL "
            "AND _ai_note <> 'no candidate') OVER () = 0 AS _ai_bijective FROM ai_j) "
            "SELECT _ai_pk, CASE WHEN _ai_note = 'no candidate' THEN 'left' "
            "WHEN _ai_note IS NOT NULL THEN 'ambiguous' WHEN _ai_bijective THEN 'update' "
            "ELSE 'left' END::text AS _ai_action, "
            f"COALESCE(_ai_note, CASE WHEN NOT _ai_bijective THEN {lit(NOT_BIJECTIVE)} END)"
            "::text AS _ai_note, CASE WHEN cardinality(_ai_cands) > 0 THEN "
            "'candidates ' || _ai_cands::text END AS _ai_detail, 0::bigint AS _ai_kids FROM ai_b"
        )

    def check(self) -> None:
        _ = self.column

    def prepare(self, batch: Batch) -> bool:
        classified = self.classify_sql(self.guard(batch, self.table.pk_json("t")))
        with transaction(batch.conn, read_only=True):
            blocked = raw.execute(batch.conn,
                f"SELECT count(*) FILTER (WHERE _ai_action = 'ambiguous') FROM ({classified}) c"
            ).scalar_one()
        if blocked:  # not one-to-one: write nothing but the reasons
            self.log_classified(batch, ("ambiguous", "left"))
        return not blocked

    def batch_sql(self, batch: Batch, after: str) -> str:
        t = self.table
        picked = self._candidates(f"t.ctid > {lit(after)}::tid AND {self.maybe_guard(batch)}",
                                  f" LIMIT {int(batch.size)}")
        claims = "count(*) OVER (PARTITION BY ai_p._ai_cands[1])"
        judged = f"SELECT ai_p.*, {self._judge('ai_p', claims)} AS _ai_note FROM ai_picked ai_p"
        changed = (f"UPDATE {t.sql} AS t SET {quote(self.column)} = j._ai_cands[1] "
                   "FROM ai_judged j WHERE j._ai_note IS NULL AND t.ctid = j._ai_tid "
                   "AND t.ctid = ANY(ARRAY(SELECT _ai_tid FROM ai_judged)) "
                   "RETURNING j._ai_pk AS pk, j._ai_before AS before, to_jsonb(t) AS after, "
                   f"{self.target.violation} AS _ai_still")
        logged = self.insert_log(batch, [
            self.log_row(batch, t, "'update'", "c.pk", "c.before", "c.after")
            + " FROM ai_changed c",
            self.log_row(batch, t, "CASE WHEN j._ai_note = 'no candidate' THEN 'left' "
                                   "ELSE 'ambiguous' END", "j._ai_pk", note="j._ai_note",
                         detail="CASE WHEN cardinality(j._ai_cands) > 0 THEN 'candidates ' "
                                "|| j._ai_cands::text END")
            + " FROM ai_judged j WHERE j._ai_note IS NOT NULL",
        ])
        return (f"WITH ai_picked AS ({picked}), ai_judged AS ({judged}), "
                f"ai_changed AS ({changed}), logged AS ({logged}) "
                f"{self.counted('ai_changed')}")
