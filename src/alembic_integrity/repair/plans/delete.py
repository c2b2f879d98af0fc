"""Delete: rows removed, refused while still referenced, or cascading one level."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...pg.identifiers import TableName, quote
from ...rules.policies import Delete, Quarantine
from ..batch import Batch
from ..log import TableInfo, lit
from .base import PolicyPlan, table_privilege

if TYPE_CHECKING:
    from ..tables import Referrer


class DeletePlan(PolicyPlan):
    """Delete (and Quarantine): refuse rows still referenced; cascade one level if asked."""

    action = "delete"
    policy: Delete | Quarantine
    archive: TableName | None = None
    skip_noted = False

    @property
    def cascade(self) -> bool:
        return bool(getattr(self.policy, "cascade", False))

    def referrers(self) -> list[Referrer]:
        return self.target.tables.referrers(self.table)

    def refusals(self) -> list[tuple[str, str]]:
        """(condition on ``t``, reason) for each way a row may be refused."""
        found = []
        for ref in self.referrers():
            if not self.cascade:
                found.append((ref.exists("t"), f"referenced by {ref.label}"))
            elif not ref.child.pk:
                found.append((ref.exists("t"),
                              f"referenced by {ref.label}, which has no primary key to log"))
            else:
                for grand in self.target.tables.referrers(ref.child):
                    nested = (f"EXISTS (SELECT 1 FROM {ref.child.sql} ai_c WHERE "
                              f"{ref.match('ai_c', 't')} AND {grand.exists('ai_c', 'ai_g')})")
                    found.append((nested, f"its referencing rows in {ref.child.label} are "
                                          f"referenced in turn by {grand.label}"))
        return found

    def note_sql(self) -> str:
        refusals = self.refusals()
        if not refusals:
            return "NULL::text"
        whens = " ".join(f"WHEN {cond} THEN {lit(reason)}" for cond, reason in refusals)
        return f"CASE {whens} END"

    def kids_sql(self) -> str:
        if not self.cascade:
            return "0::bigint"
        counts = [f"(SELECT count(*) FROM {ref.child.sql} ai_c WHERE {ref.match('ai_c', 't')})"
                  for ref in self.referrers()]
        return " + ".join(counts) if counts else "0::bigint"

    def _classify(self, extra: str) -> str:
        t = self.table
        inner = (f"SELECT {t.pk_json('t')} AS _ai_pk, {self.note_sql()} AS _ai_note, "
                 f"{self.kids_sql()} AS _ai_kids FROM {t.scan} AS t "
                 f"WHERE {self.scope} AND {extra}")
        return (f"SELECT _ai_pk, CASE WHEN _ai_note IS NULL THEN {lit(self.action)} "
                "ELSE 'refused' END AS _ai_action, _ai_note, NULL::text AS _ai_detail, "
                "CASE WHEN _ai_note IS NULL THEN _ai_kids ELSE 0 END AS _ai_kids "
                f"FROM ({inner}) ai_s")

    def privileges(self) -> list[tuple[str, str]]:
        if not self.cascade:
            return [table_privilege(self.table, "DELETE")]
        tables = [self.table, *(r.child for r in self.referrers())]
        return [table_privilege(t, p) for t in tables for p in ("UPDATE", "DELETE")]

    def image_tables(self) -> list[TableInfo]:
        kids = [r.child for r in self.referrers() if r.child.pk] if self.cascade else []
        return [*super().image_tables(), *kids]

    def prepare(self, batch: Batch) -> bool:
        # Refusals are decided over the whole scope before anything is deleted, so
        # a row referenced only by rows this policy deletes is still refused, as
        # the dry run said, whatever order the batches take; the batches then
        # pass over the rows already refused.
        if self.refusals():
            logged = self.log_classified(batch, ("refused",))
            self.skip_noted = bool(logged) or batch.resumed
        return True

    def worklist_extra(self, batch: Batch) -> str:
        if self.skip_noted:
            return self.noted_guard(batch, self.table.pk_json("t"))
        return "true"

    def batch_sql(self, batch: Batch) -> str:
        t = self.table
        keys = sorted({c for ref in self.referrers() for c in ref.parent_columns}) \
            if self.cascade else []
        key_list = "".join(f", t.{quote(c)}" for c in keys)
        # A cascade locks the parents first, so that no child is deleted for a
        # parent that a concurrent change keeps (see the package docstring).
        lock = " FOR UPDATE OF t" if self.cascade else ""
        refusable = bool(self.refusals())
        if not refusable and not self.cascade and not t.partitioned:
            return self._plain_batch_sql(batch)
        noted = f", {t.pk_json('t')} AS _ai_pk" if refusable else ""
        ctes = [self.batch_number(batch),
                self.pick_ctes(batch, f"{noted}, {self.note_sql()} AS _ai_note{key_list}", lock)]
        logs = []
        if self.cascade:
            for i, ref in enumerate(self.referrers()):
                ctes.append(f"ai_kids{i} AS ({self._delete_kids(ref)})")
                ctes.append(f"ai_kimg{i} AS ("
                            + self.insert_images(batch, ref.child, "cascade", f"ai_kids{i} k",
                                                 [(c, f"k.{quote(c)}")
                                                  for c in ref.child.names]) + ")")
                logs.append(self.log_row(batch, ref.child, "'cascade'",
                                         rows=f"(SELECT count(*) FROM ai_kids{i})", image=True)
                            + f" WHERE EXISTS (SELECT 1 FROM ai_kids{i})")
        gone = ", ".join(f"t.{quote(c)}" for c in t.names)
        using, where = self.picked_rows("ai_picked", unrefused=True)
        using = f" USING {using}" if using else ""
        ctes.append(f"ai_gone AS (DELETE FROM {t.scan} AS t{using} WHERE {where} "
                    f"RETURNING {gone})")
        ctes.append("ai_images AS (" + self.insert_images(
            batch, t, self.action, "ai_gone g", [(c, f"g.{quote(c)}") for c in t.names]) + ")")
        ctes += self.extra_ctes()
        logs.append(self.log_row(batch, t, lit(self.action), rows="(SELECT count(*) FROM "
                                 "ai_gone)", image=True, cursor=self.cursor_sql(),
                                 archive=self.archive)
                    + " WHERE EXISTS (SELECT 1 FROM ai_next)")
        if refusable:
            logs.append(self.log_row(batch, t, "'refused'", pk="p._ai_pk", note="p._ai_note")
                        + " FROM ai_picked p WHERE p._ai_note IS NOT NULL")
        ctes.append(f"logged AS ({self.insert_log(batch, logs)})")
        return "WITH " + ", ".join(ctes) + " " + self.counted()

    def _plain_batch_sql(self, batch: Batch) -> str:
        """Nothing to refuse, nothing to cascade: the DELETE takes the worklist's row
        versions itself (one TID scan), checking the scope again on each."""
        t = self.table
        gone = ", ".join(f"t.{quote(c)}" for c in t.names)
        ctes = [self.batch_number(batch), self.next_cte(batch),
                f"ai_gone AS (DELETE FROM {t.scan} AS t WHERE t.ctid = ANY(ARRAY(SELECT "
                f"_ai_tid FROM ai_next)) AND {self.scope} RETURNING {gone})",
                "ai_images AS (" + self.insert_images(
                    batch, t, self.action, "ai_gone g", [(c, f"g.{quote(c)}") for c in t.names])
                + ")", *self.extra_ctes()]
        logged = self.insert_log(batch, [
            self.log_row(batch, t, lit(self.action), rows="(SELECT count(*) FROM ai_gone)",
                         image=True, cursor=self.cursor_sql(), archive=self.archive)
            + " WHERE EXISTS (SELECT 1 FROM ai_next)"])
        return "WITH " + ", ".join([*ctes, f"logged AS ({logged})"]) + " " + self.counted()

    def _delete_kids(self, ref: Referrer) -> str:
        """Referencing rows of the picked rows; not those picked themselves (self-reference)."""
        parent = " AND ".join(f"ai_c.{quote(c)} = p.{quote(k)}"
                              for c, k in zip(ref.columns, ref.parent_columns, strict=True))
        itself = (" AND ai_c.ctid <> ALL(ARRAY(SELECT _ai_tid FROM ai_picked))"
                  if ref.child.oid == self.table.oid else "")
        gone = ", ".join(f"ai_c.{quote(c)}" for c in ref.child.names)
        return (f"DELETE FROM {ref.child.sql} AS ai_c USING ai_picked p "
                f"WHERE p._ai_note IS NULL AND {parent}{itself} RETURNING {gone}")

    def extra_ctes(self) -> list[str]:
        """More CTEs over ``ai_gone`` (Quarantine copies the rows to its archive)."""
        return []
