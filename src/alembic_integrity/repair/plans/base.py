"""A policy as SQL: what every plan shares (classification, the keyset batch loop, the log).

Rows are taken in primary-key order, ``LIMIT batch_size`` at a time, each
batch starting after the last key the previous one took (keyset
pagination). The order is the key's, not the plan's: an index on the rule's
column, a partitioned table or a parallel scan all give the same batches, and
no violating row past the cursor can be passed over. Each batch logs the
cursor it reached, so a resumed run starts exactly where the killed one
stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError
from ...pg import raw
from ...pg.identifiers import TableName, quote
from ...pg.locks import ROW_EXCLUSIVE, LockNeed
from ...rules.kinds import ForeignKeyRule, NotNullRule, Rule
from ...rules.policies import Policy
from ..batch import Batch
from ..log import CHANGE_ACTIONS, LOG_COLUMNS, TableInfo, lit, run_short

if TYPE_CHECKING:
    from ..tables import Target


NO_PRIMARY_KEY = "table has no primary key (repair logs and restores rows by key)"
CURSOR = "ai_cursor"
"""The bound parameter holding the keyset cursor (jsonb of the last key taken)."""
LAST = "ai_last"
"""The bound parameter holding the last worklist number a batch took."""
WORKLIST = "ai_worklist"


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
        self.params: dict[str, Any] = {}
        with contextlib.suppress(ConfigurationError):  # check() says what is wrong
            self.validation_sql()  # binds the policy's values, whatever runs first

    def bind(self, key: str, value: Any) -> str:
        """A policy value as a bound parameter of every statement of this rule."""
        name = f"ai_p{self.index}_{key}"
        self.params[name] = value
        return raw.param(name)

    @property
    def scope(self) -> str:
        return self.target.scope(self.index)

    @property
    def description(self) -> str:
        return self.policy.describe()

    @property
    def writes(self) -> bool:
        return bool(self.table.pk)

    @property
    def changed_columns(self) -> tuple[str, ...]:
        """Columns an update changes (their old and new values are the image)."""
        return ()

    def classify_sql(self, extra: str = "true") -> str:
        if not self.writes:
            return self._rows_as("'refused'", lit(NO_PRIMARY_KEY), extra)
        return self._classify(extra)

    def _classify(self, extra: str) -> str:
        return self._rows_as(lit(self.action), "NULL::text", extra)

    def _rows_as(self, action: str, note: str, extra: str) -> str:
        return (f"SELECT {self.table.pk_json('t')} AS _ai_pk, {action}::text AS _ai_action, "
                f"{note}::text AS _ai_note, NULL::text AS _ai_detail, 0::bigint AS _ai_kids "
                f"FROM {self.table.scan} AS t WHERE {self.scope} AND {extra}")

    def validation_sql(self) -> list[str]:
        """Statements EXPLAIN checks before the run writes anything (see ``targets``)."""
        return [self.classify_sql()]

    def privileges(self) -> list[tuple[str, str]]:
        """(SQL true when granted, what is needed) for what this policy writes."""
        return [table_privilege(self.table, "UPDATE")]

    def check(self) -> None:
        """Raise ConfigurationError for a declaration that cannot work, before anything runs."""
        key = set(self.table.pk) & set(self.changed_columns)
        if key:
            raise ConfigurationError(
                f"{self.target.rule_id}: {self.description} changes the primary key column "
                f"{sorted(key)[0]}; repair logs and restores rows by their key, so a policy "
                "may not change it")

    def image_tables(self) -> list[TableInfo]:
        """Tables whose image tables this plan writes."""
        return [self.table] if self.writes else []

    def prepare(self, batch: Batch) -> bool:
        """Work before the batches (log refusals, create the archive, judge a match).

        False when no batch should run.
        """
        return True

    def batch_sql(self, batch: Batch) -> str:
        """One batch: the next ``batch.size`` rows of the worklist, changed and imaged
        in one statement; returns :meth:`counted`."""
        raise NotImplementedError

    # -- the keyset

    def after_cursor(self, cursor: str | None) -> str:
        """Rows after the cursor in key order (``true`` for the first batch).

        Each key value is read from the jsonb cursor by a scalar sub-select,
        which the planner turns into a parameter, so the row comparison is an
        index condition on the primary key.
        """
        if cursor is None:
            return "true"
        t = self.table
        values = ", ".join(
            f"(SELECT ai_k.{quote(c)} FROM jsonb_populate_record(NULL::{t.sql}, "
            f"{raw.param(CURSOR)}::jsonb) ai_k)" for c in t.pk)
        return f"({t.pk_list('t')}) > ({values})"

    def worklist_sql(self, batch: Batch, cursor: str | None) -> list[str]:
        """The policy's WORKLIST: the rows in scope now past the cursor, numbered in key
        order, in a temporary table of this session (key, ``ctid``, number).

        One sequential scan finds them, whatever indexes the table has; each batch
        then takes the next ``batch_size`` numbers, fetches its rows by ``ctid``
        (a TID scan) and checks them again. A killed run loses the table with its
        session; the resumed run builds it again past the logged cursor.
        """
        t = self.table
        order = ", ".join(f"t.{quote(c)}" for c in t.pk)
        keys = ", ".join(f"t.{quote(c)} AS _ai_k{i}" for i, c in enumerate(t.pk))
        return [f"DROP TABLE IF EXISTS pg_temp.{WORKLIST}",
                f"CREATE TEMPORARY TABLE {WORKLIST} AS SELECT row_number() OVER (ORDER BY "
                f"{order}) AS _ai_n, t.ctid AS _ai_tid, {keys} FROM {t.scan} AS t "
                f"WHERE {self.scope} AND {self.after_cursor(cursor)} "
                f"AND {self.worklist_extra(batch)}",
                f"CREATE INDEX ON pg_temp.{WORKLIST} (_ai_n)"]

    def worklist_extra(self, batch: Batch) -> str:
        """More conditions on the worklist's rows (Delete: not refused up front)."""
        return "true"

    def key_join(self, table: str, picked: str) -> str:
        return " AND ".join(f"{table}.{quote(c)} = {picked}._ai_k{i}"
                            for i, c in enumerate(self.table.pk))

    def by_version(self, table: str, picked: str) -> str:
        """Join the exact row version picked: key and ``ctid`` (for a partitioned table,
        where a ``ctid`` repeats across partitions, and for per-row values)."""
        return f"{table}.ctid = {picked}._ai_tid AND {self.key_join(table, picked)}"

    def picked_rows(self, cte: str, *, unrefused: bool = False) -> tuple[str, str]:
        """(the ``p`` of a USING/FROM, WHERE) that make an UPDATE/DELETE of ``t`` take
        exactly the row versions of ``cte`` (those without ``_ai_note`` if ``unrefused``).

        A row another session changed in between has a new ``ctid``, so
        PostgreSQL's re-check (EvalPlanQual) drops it: it is skipped, never
        overwritten, and the image is always the version that was changed. On
        a plain table the ``ctid`` list alone is one TID scan (no join for the
        planner to misjudge); on a partitioned table the key joins too.
        """
        if self.table.partitioned:
            where = self.by_version("t", "p") + (" AND p._ai_note IS NULL" if unrefused else "")
            return f"{cte} p", where
        only = "_ai_note IS NULL" if unrefused else "true"
        return "", f"t.ctid = ANY(ARRAY(SELECT _ai_tid FROM {cte} WHERE {only}))"

    def pick_ctes(self, batch: Batch, columns: str = "", lock: str = "") -> str:
        """``ai_next``: the batch's worklist rows; ``ai_picked``: those still in scope now,
        with their key as ``_ai_k0``... and ``columns`` computed over the current row ``t``."""
        t = self.table
        keys = ", ".join(f"t.{quote(c)} AS _ai_k{i}" for i, c in enumerate(t.pk))
        if t.partitioned:
            source = f"ai_next w JOIN {t.scan} AS t ON {self.by_version('t', 'w')} WHERE true"
        else:  # one TID scan; a row written meanwhile into a freed slot is checked like any
            source = f"{t.scan} AS t WHERE t.ctid = ANY(ARRAY(SELECT _ai_tid FROM ai_next))"
        return (f"{self.next_cte(batch)}, "
                f"ai_picked AS (SELECT t.ctid AS _ai_tid, {keys}{columns} FROM {source} "
                f"AND {self.scope}{lock})")

    def next_cte(self, batch: Batch) -> str:
        """``ai_next``: the batch's rows of the worklist (the next numbers after the last)."""
        return (f"ai_next AS (SELECT * FROM pg_temp.{WORKLIST} WHERE _ai_n > "
                f"{raw.param(LAST)} ORDER BY _ai_n LIMIT {int(batch.size)})")

    def cursor_sql(self) -> str:
        """The last key of the batch, as jsonb: where a resumed run starts."""
        pairs = ", ".join(f"{lit(c)}, w._ai_k{i}" for i, c in enumerate(self.table.pk))
        return (f"(SELECT jsonb_build_object({pairs}) FROM (SELECT * FROM ai_next "
                "ORDER BY _ai_n DESC LIMIT 1) w)")

    def apply(self, batch: Batch) -> None:
        """The worklist, then batches in its (key) order until one comes back empty.

        A change that leaves its row violating, or a row refused, is never taken
        again in this run; rows that start to violate after the worklist was
        built are left, and the summary counts them.
        """
        if not self.writes or not self.prepare(batch):
            return
        doing = f"repair {self.target.rule_id}, {self.description}"
        cursor = batch.cursor(self.target.rule_id, self.index)
        params = self.target.params
        run_short(batch.conn, self.worklist_sql(batch, cursor), batch.settings,
                  f"{doing}: listing the violating rows", params={**params, CURSOR: cursor})
        last = 0
        try:
            while True:
                found = run_short(batch.conn, self.batch_sql(batch), batch.settings, doing,
                                  locks=self.locks, params={**params, LAST: last})
                if not self._counted(batch, found):
                    return
                last = int(next(n for action, _, n in found if action == "picked"))
        finally:
            raw.execute(batch.conn, f"DROP TABLE IF EXISTS pg_temp.{WORKLIST}")

    @property
    def locks(self) -> tuple[LockNeed, ...]:
        """What a batch locks: its table, for writing. Looked at in ``pg_locks`` before each
        attempt, so a batch never queues behind a long holder (and writers behind it)."""
        return (LockNeed(self.table.oid, ROW_EXCLUSIVE),)

    def _counted(self, batch: Batch, found: Sequence[tuple[Any, ...]]) -> int:
        """Add one batch's counts; the number of worklist rows it took."""
        counts = {action: int(n) for action, n, _ in found}
        picked = counts.pop("picked")
        batch.still += counts.pop("still", 0)
        batch.skipped += max(picked - sum(counts.values()), 0)
        batch.count(self.target.rule_id, self.index, counts)
        batch.advance(self.target.rule_id, self.description,
                      sum(n for a, n in counts.items() if a in CHANGE_ACTIONS),
                      sum(n for a, n in counts.items() if a not in CHANGE_ACTIONS))
        return picked

    # -- SQL pieces shared by the subclasses

    def noted_guard(self, batch: Batch, pk_json: str) -> str:
        """True for a row not yet left for a person by this rule (resumes, up-front notes)."""
        batch.index_log()
        return batch.log.not_noted(batch.repair_id, self.table, self.target.rule_id, pk_json)

    def log_row(self, batch: Batch, table: TableInfo, action: str, *, rows: str = "1",
                pk: str = "NULL::jsonb", note: str = "NULL::text", detail: str = "NULL::text",
                image: bool = False, columns: Sequence[str] = (), cursor: str = "NULL::jsonb",
                archive: TableName | None = None) -> str:
        """The SELECT list of one log row; the caller adds FROM."""
        image_name = lit(batch.log.image_name(table)) if image else "NULL"
        changed = (f"ARRAY[{', '.join(lit(c) for c in columns)}]::text[]" if columns
                   else "NULL::text[]")
        values = [str(int(batch.repair_id)), "(SELECT batch FROM ai_b)", lit(table.schema),
                  lit(table.name), lit(self.target.rule_id), lit(self.description),
                  str(self.index), f"{action}::text", f"{rows}::bigint", f"{image_name}::text",
                  changed, f"{pk}::jsonb", f"{cursor}::jsonb",
                  f"{lit(archive.schema) if archive else 'NULL'}::text",
                  f"{lit(archive.name) if archive else 'NULL'}::text", note, detail]
        return "SELECT " + ", ".join(values)

    def insert_log(self, batch: Batch, selects: Sequence[str]) -> str:
        columns = ", ".join(LOG_COLUMNS)
        union = " UNION ALL ".join(selects)
        return (f"INSERT INTO {batch.log.log_sql} ({columns}) {union} "
                "RETURNING action, rows")

    def insert_images(self, batch: Batch, table: TableInfo, action: str, source: str,
                      columns: Sequence[tuple[str, str]]) -> str:
        """INSERT of image rows: ``columns`` are (image column, value from ``source``)."""
        image = batch.log.image_sql(batch.log.image_name(table))
        names = ", ".join(["_ai_repair_id", "_ai_batch", "_ai_action",
                           *(quote(name) for name, _ in columns)])
        values = ", ".join([str(int(batch.repair_id)), "(SELECT batch FROM ai_b)", lit(action),
                            *(value for _, value in columns)])
        return f"INSERT INTO {image} ({names}) SELECT {values} FROM {source}"

    @staticmethod
    def batch_number(batch: Batch) -> str:
        """One number per batch from the log's sequence, shared by its images and log rows
        (a CTE with a volatile function is computed once)."""
        return f"ai_b AS (SELECT nextval('{batch.log.batch_seq_sql}') AS batch)"

    def log_classified(self, batch: Batch, actions: Sequence[str]) -> int:
        """Log the rows the classification leaves for a person, in one statement.

        Only the log is written (no row of the table is locked), so one
        statement is fine; the guard keeps it idempotent across resumes.
        """
        classified = self.classify_sql(self.noted_guard(batch, self.table.pk_json("t")))
        wanted = ", ".join(lit(a) for a in actions)
        select = self.log_row(batch, self.table, "c._ai_action", pk="c._ai_pk",
                              note="c._ai_note", detail="c._ai_detail")
        sql = self.insert_log(batch, [f"{select} FROM ({classified}) c "
                                      f"WHERE c._ai_action IN ({wanted})"])
        counted = run_short(batch.conn, f"WITH {self.batch_number(batch)}, logged AS ({sql}) "
                                        "SELECT count(*) FROM logged",
                            batch.settings,
                            f"repair {self.target.rule_id}, {self.description}: logging refusals",
                            params=self.target.params)
        if int(counted[0][0]):
            batch.untallied.add(self.target.rule_id)
        return int(counted[0][0])

    def counted(self, changed: str | None = None) -> str:
        """Rows picked by the batch with the cursor reached, log rows written per action,
        and for updates the changed rows that still violate (``_ai_still`` of ``changed``)."""
        still = (f" UNION ALL SELECT 'still', count(*) FILTER (WHERE _ai_still), NULL "
                 f"FROM {changed}") if changed else ""
        return ("SELECT 'picked', count(*), max(_ai_n) FROM ai_next "
                f"UNION ALL SELECT action, sum(rows), NULL FROM logged GROUP BY action{still}")


def table_privilege(table: TableInfo, privilege: str) -> tuple[str, str]:
    return (f"has_table_privilege({table.oid}, {lit(privilege)})",
            f"{privilege} on {table.label}")


def rule_column(rule: Rule) -> str | None:
    if isinstance(rule, NotNullRule):
        return rule.column
    if isinstance(rule, ForeignKeyRule) and len(rule.columns) == 1:
        return rule.columns[0]
    return None
