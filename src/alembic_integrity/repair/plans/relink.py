"""Relink: a missing reference filled from a match, only where it is one-to-one."""

from __future__ import annotations

from ...errors import ConfigurationError
from ...pg import raw
from ...pg.identifiers import quote
from ...rules.policies import Relink
from ..batch import Batch
from ..log import lit, new_column, transaction
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
                 f"= {source}._ai_cands[1] AND {self.table.pk_json('ai_o')} <> {source}._ai_pk)")
        return (f"CASE WHEN cardinality({source}._ai_cands) = 0 THEN 'no candidate' "
                f"WHEN cardinality({source}._ai_cands) > 1 THEN 'more than one candidate' "
                f"WHEN {claims} > 1 THEN 'candidate claimed by another row too' "
                f"WHEN {taken} THEN 'candidate already referenced by another row' END")

    def _candidates(self, extra: str, lock: str = "") -> str:
        t = self.table
        return (f"SELECT t.ctid AS _ai_tid, {t.pk_json('t')} AS _ai_pk, "
                f"ARRAY({self.policy.match}) AS _ai_cands "
                f"FROM {t.scan} AS t WHERE {self.scope} AND {extra}{lock}")

    def _classify(self, extra: str) -> str:
        claims = ("(SELECT ai_cl.n FROM ai_claims ai_cl "
                  "WHERE ai_cl.cand = ai_m._ai_cands[1])")
        judged = (f"SELECT ai_m.*, {self._judge('ai_m', claims)} AS _ai_note FROM ai_m")
        return (
            f"WITH ai_m AS ({self._candidates(extra)}), "
            "ai_claims AS (SELECT u.cand, count(*) AS n FROM ai_m, "
            "unnest(ai_m._ai_cands) AS u(cand) GROUP BY u.cand), "
            f"ai_j AS ({judged}), "
            "ai_bij AS (SELECT ai_j.*, count(*) FILTER (WHERE _ai_note IS NOT NULL "
            "AND _ai_note <> 'no candidate') OVER () = 0 AS _ai_bijective FROM ai_j) "
            "SELECT _ai_pk, CASE WHEN _ai_note = 'no candidate' THEN 'left' "
            "WHEN _ai_note IS NOT NULL THEN 'ambiguous' WHEN _ai_bijective THEN 'update' "
            "ELSE 'left' END::text AS _ai_action, "
            f"COALESCE(_ai_note, CASE WHEN NOT _ai_bijective THEN {lit(NOT_BIJECTIVE)} END)"
            "::text AS _ai_note, CASE WHEN cardinality(_ai_cands) > 0 THEN "
            "'candidates ' || _ai_cands::text END AS _ai_detail, 0::bigint AS _ai_kids FROM ai_bij"
        )

    @property
    def changed_columns(self) -> tuple[str, ...]:
        return (self.column,)

    def check(self) -> None:
        _ = self.column
        super().check()

    def prepare(self, batch: Batch) -> bool:
        classified = self.classify_sql(self.noted_guard(batch, self.table.pk_json("t")))
        with transaction(batch.conn, read_only=True):
            blocked = raw.execute(batch.conn,
                f"SELECT count(*) FILTER (WHERE _ai_action = 'ambiguous') FROM ({classified}) c",
                self.target.params).scalar_one()
        if blocked:  # not one-to-one: write nothing but the reasons
            self.log_classified(batch, ("ambiguous", "left"))
        return not blocked

    def batch_sql(self, batch: Batch) -> str:
        t = self.table
        column = quote(self.column)
        picked = self.pick_ctes(batch, f", {t.pk_json('t')} AS _ai_pk, t.{column} AS "
                                       f"_ai_o0, ARRAY({self.policy.match}) AS _ai_cands")
        claims = "count(*) OVER (PARTITION BY ai_p._ai_cands[1])"
        judged = f"SELECT ai_p.*, {self._judge('ai_p', claims)} AS _ai_note FROM ai_picked ai_p"
        changed = (f"UPDATE {t.scan} AS t SET {column} = j._ai_cands[1] FROM ai_judged j "
                   f"WHERE j._ai_note IS NULL AND {self.by_version('t', 'j')} "
                   + "RETURNING " + ", ".join(f"j._ai_k{i}" for i in range(len(t.pk)))
                   + f", j._ai_o0, t.{column} AS _ai_n0, {self.target.violation} AS _ai_still")
        images = self.insert_images(
            batch, t, "update", "ai_changed c",
            [*((c, f"c._ai_k{i}") for i, c in enumerate(t.pk)), (self.column, "c._ai_o0"),
             (new_column(self.column), "c._ai_n0")])
        logged = self.insert_log(batch, [
            self.log_row(batch, t, "'update'", rows="(SELECT count(*) FROM ai_changed)",
                         image=True, columns=self.changed_columns, cursor=self.cursor_sql())
            + " WHERE EXISTS (SELECT 1 FROM ai_next)",
            self.log_row(batch, t, "CASE WHEN j._ai_note = 'no candidate' THEN 'left' "
                                   "ELSE 'ambiguous' END", pk="j._ai_pk", note="j._ai_note",
                         detail="CASE WHEN cardinality(j._ai_cands) > 0 THEN 'candidates ' "
                                "|| j._ai_cands::text END")
            + " FROM ai_judged j WHERE j._ai_note IS NOT NULL",
        ])
        return (f"WITH {self.batch_number(batch)}, {picked}, "
                f"ai_judged AS ({judged}), ai_changed AS ({changed}), ai_images AS ({images}), "
                f"logged AS ({logged}) {self.counted('ai_changed')}")
