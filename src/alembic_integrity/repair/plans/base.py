"""A policy as SQL: what every plan shares (classification, the batch loop, the log rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...pg.identifiers import TableName
from ...rules.kinds import ForeignKeyRule, NotNullRule, Rule
from ...rules.policies import Policy
from ..batch import Batch, RepairProgress
from ..log import (
    CHANGE_ACTIONS,
    LOG_COLUMNS,
    TableInfo,
    lit,
    run_short,
)

if TYPE_CHECKING:
    from ..tables import Target


NO_PRIMARY_KEY = "table has no primary key (repair logs and restores rows by key)"
WORK_MEM = ("SELECT set_config('work_mem', '64MB', true) "
            "WHERE pg_size_bytes(current_setting('work_mem')) < pg_size_bytes('64MB')")
"""Room for a batch's changed rows with their images, which a CTE read twice keeps:
in the default 4MB, 10,000 updated rows spill to a temporary file."""


class PolicyPlan:
    """One policy of one rule, as SQL: how to classify its rows, and how to apply it.

    ``classify_sql`` returns one row per violating row the policy takes, with
    ``_ai_pk`` (jsonb), ``_ai_action`` (what it would do: a change action or
    refused/ambiguous/left), ``_ai_note`` (why not), ``_ai_detail``, ``_ai_kids``
    (referencing rows a cascade would delete).
    """

    action = "update"

    def __init__(self, target: Target, index: int, policy: Policy) -> None:
        self.target = target
        self.index = index
        self.policy = policy
        self.table = target.table

    @property
    def scope(self) -> str:
        return self.target.scope(self.index)

    @property
    def description(self) -> str:
        return self.policy.describe()

    @property
    def writes(self) -> bool:
        return bool(self.table.pk)

    def classify_sql(self, extra: str = "true") -> str:
        if not self.writes:
            return self._rows_as("'refused'", lit(NO_PRIMARY_KEY), extra)
        return self._classify(extra)

    def _classify(self, extra: str) -> str:
        return self._rows_as(lit(self.action), "NULL::text", extra)

    def _rows_as(self, action: str, note: str, extra: str) -> str:
        return (f"SELECT {self.table.pk_json('t')} AS _ai_pk, {action}::text AS _ai_action, "
                f"{note}::text AS _ai_note, NULL::text AS _ai_detail, 0::bigint AS _ai_kids "
                f"FROM {self.table.sql} AS t WHERE {self.scope} AND {extra}")

    def privileges(self) -> list[tuple[str, str]]:
        """(SQL true when granted, what is needed) for what this policy writes."""
        return [table_privilege(self.table, "UPDATE")]

    def prepare(self, batch: Batch) -> bool:
        """Work before the batches (log refusals, create the archive, judge a match).

        False when no batch should run.
        """
        return True

    def batch_sql(self, batch: Batch, after: str) -> str:
        """One batch: rows in scope, not logged yet, past ``ctid`` ``after``."""
        raise NotImplementedError

    def pick(self, batch: Batch, after: str) -> str:
        """The WHERE of a batch's pick: in scope, past the cursor, not logged yet."""
        return f"{self.scope} AND t.ctid > {lit(after)}::tid AND {self.maybe_guard(batch)}"

    def maybe_guard(self, batch: Batch) -> str:
        """The log guard, when a row already logged could be picked again.

        Behind the cursor nothing is seen twice, and a deleted or fixed row no
        longer matches, so within one pass only a row logged but still violating
        can come back: after a resume, a refusal logged up front, or a change
        that left the row violating (each batch reports those). Until then we
        spare every batch a look-up of its rows in a growing log.
        """
        return self.guard(batch, self.table.pk_json("t")) if batch.guarded else "true"

    def check(self) -> None:
        """Raise ConfigurationError for a declaration that cannot work, before anything runs."""

    def apply(self, batch: Batch) -> None:
        """Batches in physical order until one comes back empty.

        Each batch resumes after the highest ``ctid`` the previous one picked
        (a TID Range Scan), so the table is read about once in all, not once per
        batch; the last, empty batch only reads the tail after the last row
        picked. Scans run in block order only with synchronized scans off, hence
        the SET LOCAL. Rows changed and still violating are skipped by the log
        guard; rows the cursor can no longer see (inserted meanwhile into pages
        already passed) are left, and reported when the summary counts.
        """
        if not self.writes or not self.prepare(batch):
            return
        doing = f"repair {self.target.rule_id}, {self.description}"
        changed = noted = 0
        after = "(0,0)"
        while True:
            found = run_short(batch.conn, ["SET LOCAL synchronize_seqscans = off", WORK_MEM,
                                           self.batch_sql(batch, after)],
                              batch.settings, doing)
            counts = {action: int(n) for action, n, _ in found}
            picked = counts.pop("picked")
            still = counts.pop("still", 0)
            if still:  # a change left rows violating: from now on, skip logged rows
                batch.guarded = True
                batch.still += still
            batch.wrote(sum(counts.values()))
            batch.count(self.target.rule_id, self.index, counts)
            changed += sum(n for a, n in counts.items() if a in CHANGE_ACTIONS)
            noted += sum(n for a, n in counts.items() if a not in CHANGE_ACTIONS)
            if batch.progress is not None:
                batch.progress(RepairProgress(self.target.rule_id, self.description,
                                              changed, noted))
            if not picked:
                return
            after = next(last for action, _, last in found if action == "picked")

    # -- SQL pieces shared by the subclasses

    def guard(self, batch: Batch, pk_json: str) -> str:
        """The log guard's SQL; the log gets the index it looks rows up by first."""
        batch.index_log()
        return batch.log.guard(batch.repair_id, self.table, self.target.rule_id, pk_json)

    def log_row(self, batch: Batch, table: TableInfo, action: str, pk: str,
                before: str = "NULL::jsonb", after: str = "NULL::jsonb", note: str = "NULL::text",
                detail: str = "NULL::text", archive: TableName | None = None) -> str:
        """The SELECT list of one log row; the caller adds FROM."""
        values = [str(int(batch.repair_id)), lit(table.schema), lit(table.name),
                  lit(self.target.rule_id), lit(self.description), str(self.index),
                  f"{action}::text", pk, before, after,
                  f"{lit(archive.schema) if archive else 'NULL'}::text",
                  f"{lit(archive.name) if archive else 'NULL'}::text", note, detail]
        return "SELECT " + ", ".join(values)

    def insert_log(self, batch: Batch, selects: Sequence[str]) -> str:
        columns = ", ".join(LOG_COLUMNS)
        union = " UNION ALL ".join(selects)
        return f"INSERT INTO {batch.log.log_sql} ({columns}) {union} RETURNING action"

    def log_classified(self, batch: Batch, actions: Sequence[str]) -> int:
        """Log the rows the classification leaves for a person, in one statement.

        Only the log is written (no row of the table is locked), so one
        statement is fine; the guard keeps it idempotent across resumes.
        """
        classified = self.classify_sql(self.guard(batch, self.table.pk_json("t")))
        wanted = ", ".join(lit(a) for a in actions)
        select = self.log_row(batch, self.table, "c._ai_action", "c._ai_pk",
                              note="c._ai_note", detail="c._ai_detail")
        sql = self.insert_log(batch, [f"{select} FROM ({classified}) c "
                                      f"WHERE c._ai_action IN ({wanted})"])
        counted = run_short(batch.conn, f"WITH logged AS ({sql}) SELECT count(*) FROM logged",
                            batch.settings,
                            f"repair {self.target.rule_id}, {self.description}: logging refusals")
        batch.wrote(int(counted[0][0]))
        if int(counted[0][0]):
            batch.untallied.add(self.target.rule_id)
        return int(counted[0][0])

    @staticmethod
    def counted(changed: str | None = None) -> str:
        """Rows picked by the batch, log rows written per action, and for updates the
        changed rows that still violate (``_ai_still`` of ``changed``)."""
        still = (f" UNION ALL SELECT 'still', count(*) FILTER (WHERE _ai_still), NULL "
                 f"FROM {changed}") if changed else ""
        return ("SELECT 'picked', count(*), max(_ai_tid)::text FROM ai_picked "
                f"UNION ALL SELECT action, count(*), NULL FROM logged GROUP BY action{still}")


def table_privilege(table: TableInfo, privilege: str) -> tuple[str, str]:
    return (f"has_table_privilege({table.oid}, {lit(privilege)})",
            f"{privilege} on {table.label}")


def rule_column(rule: Rule) -> str | None:
    if isinstance(rule, NotNullRule):
        return rule.column
    if isinstance(rule, ForeignKeyRule) and len(rule.columns) == 1:
        return rule.columns[0]
    return None
