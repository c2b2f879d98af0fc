"""Repair the rows that break declared rules, as each rule's policies say.

For every rule with violating rows, its policies are tried in order. A policy
takes the violating rows its ``where`` matches and no earlier policy's
``where`` matched: the partition is decided by the ``where`` clauses alone,
so a dry run and the real run agree, and a row a policy refuses (a Delete of a
referenced row, a Relink that is not one-to-one) stays with that policy and is
left for a person with the reason; it never falls through to a later, perhaps
more destructive, policy. Rows no policy takes are left for a person too.

A dry run (the default) reads one snapshot in a READ ONLY transaction and
writes nothing, not even the log. ``apply=True`` works in batches of
``batch_size`` rows, each batch one short transaction under ``lock_timeout``
and one statement of data-modifying CTEs::

    WITH picked AS (SELECT t.ctid, to_jsonb(t) ... FROM tbl t WHERE <violates>
                    AND <this policy> AND t.ctid > <cursor> LIMIT n),
         changed AS (UPDATE/DELETE ... WHERE ctid IN picked
                     RETURNING <pk>, <before>, <after>)
    INSERT INTO <log> SELECT ... FROM changed

so no row is changed without its before-image, and rows never travel to the
client. The pick takes no ``FOR UPDATE`` lock: the UPDATE/DELETE matches the
exact row version picked (by ``ctid``), and a row another session changed in
between has a new ``ctid`` after PostgreSQL's re-check (EvalPlanQual), so it is
skipped rather than overwritten, and the logged before-image is always the
version that was changed. Row locks are taken by the UPDATE/DELETE itself and
last one short batch. (A cascading Delete does lock its picked rows first.)

A crash between batches loses nothing; running the same repair again (same
rules) resumes the repair record still ``running`` and finishes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from .. import catalog, raw
from ..errors import ConfigurationError, IntegrityError, PredicateError
from ..identifiers import TableName, quote, truncated_name
from ..model_rules import DeclaredRules
from ..policies import Delete, Invalidate, Manual, Policy, Quarantine, Relink, SetValue, Sql
from ..repairlog import (
    CHANGE_ACTIONS,
    CHANGES_SQL,
    DEFAULT_LOG_TABLE,
    LOG_COLUMNS,
    SAMPLE,
    LogTables,
    TableInfo,
    autocommit_connection,
    exclusive,
    first_line,
    format_key,
    lit,
    load_table,
    run_short,
    transaction,
    translate,
)
from ..rules import ForeignKeyRule, NotNullRule, Rule
from ..settings import Settings

NO_POLICY = "no policy"
STILL_VIOLATES = "changed by its policy but still breaks the rule"
NO_PRIMARY_KEY = "table has no primary key (repair logs and restores rows by key)"
NOT_BIJECTIVE = "not relinked: the match over this policy's rows is not one-to-one"
APPEARED = "violates now but was not seen by the repair (changed meanwhile); run it again"


# --------------------------------------------------------------------------- results


@dataclass
class PolicyOutcome:
    """What one policy of one rule did (or, in a dry run, would do)."""

    index: int
    kind: str
    description: str
    changed: int = 0
    cascaded: int = 0
    refused: int = 0
    ambiguous: int = 0
    left: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def for_person(self) -> int:
        return self.refused + self.ambiguous + self.left

    def add(self, action: str, note: str | None, count: int, samples: Iterable[str] = ()) -> None:
        if action in ("update", "delete", "quarantine"):
            self.changed += count
        elif action == "cascade":
            self.cascaded += count
        else:
            setattr(self, action, getattr(self, action) + count)
            reason = note or action
            self.reasons[reason] = self.reasons.get(reason, 0) + count
            kept = self.samples.setdefault(reason, [])
            kept.extend(list(samples)[: SAMPLE - len(kept)])

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "policy": self.description, "kind": self.kind,
                "changed": self.changed, "cascaded": self.cascaded, "refused": self.refused,
                "ambiguous": self.ambiguous, "left": self.left, "reasons": self.reasons,
                "samples": self.samples}


@dataclass
class RuleOutcome:
    """One rule: its violating rows, per policy, and what is left for a person."""

    rule: str
    kind: str
    table: str
    violating: int = 0
    policies: list[PolicyOutcome] = field(default_factory=list)
    unmatched: int = 0
    unmatched_samples: list[str] = field(default_factory=list)
    still_violating: int = 0
    still_samples: list[str] = field(default_factory=list)
    remaining: int | None = None
    skipped: str | None = None

    @property
    def for_person(self) -> int:
        return sum(p.for_person for p in self.policies) + self.unmatched + self.still_violating

    @property
    def changed(self) -> int:
        return sum(p.changed + p.cascaded for p in self.policies)

    def left_reasons(self) -> list[tuple[str, int, list[str]]]:
        """(reason, rows, sample keys) for every row left for a person."""
        found = [(f"{p.kind} #{p.index + 1}: {reason}", count, p.samples.get(reason, []))
                 for p in self.policies for reason, count in p.reasons.items()]
        if self.unmatched:
            found.append((NO_POLICY, self.unmatched, self.unmatched_samples))
        if self.still_violating:
            found.append((STILL_VIOLATES, self.still_violating, self.still_samples))
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "table": self.table,
                "violating": self.violating, "policies": [p.to_dict() for p in self.policies],
                "unmatched": self.unmatched, "unmatched_samples": self.unmatched_samples,
                "still_violating": self.still_violating, "still_samples": self.still_samples,
                "remaining": self.remaining, "skipped": self.skipped,
                "for_person": self.for_person}


@dataclass
class RepairResult:
    """A dry run's plan or an applied repair's summary; ``repair_id`` is for ``restore``."""

    applied: bool
    log_table: str
    rules: list[RuleOutcome] = field(default_factory=list)
    repair_id: int | None = None
    resumed: bool = False

    @property
    def for_person(self) -> int:
        return sum(r.for_person for r in self.rules)

    @property
    def changed(self) -> int:
        return sum(r.changed for r in self.rules)

    @property
    def exit_code(self) -> int:
        """0 when nothing is (or would be) left for a person, else 1."""
        return 1 if self.for_person else 0

    @property
    def restore_command(self) -> str | None:
        if self.repair_id is None:
            return None
        extra = "" if self.log_table == DEFAULT_LOG_TABLE else f" --log-table {self.log_table}"
        return f"alembic-integrity restore {self.repair_id}{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "repair_id": self.repair_id, "resumed": self.resumed,
                "log_table": self.log_table, "changed": self.changed,
                "for_person": self.for_person, "restore": self.restore_command,
                "rules": [r.to_dict() for r in self.rules]}

    def to_text(self) -> str:
        verb = "changed" if self.applied else "would change"
        lines = []
        for rule in self.rules:
            if rule.skipped:
                lines.append(f"{rule.rule}: skipped ({rule.skipped})")
                continue
            lines.append(f"{rule.rule}: {rule.violating} violating row(s)")
            for p in rule.policies:
                cascade = f" (+{p.cascaded} referencing rows)" if p.cascaded else ""
                lines.append(f"  {p.index + 1}. {p.description}: {verb} {p.changed}{cascade}, "
                             f"refused {p.refused}, ambiguous {p.ambiguous}, left {p.left}")
            for reason, count, samples in rule.left_reasons():
                lines.append(f"  left for a person: {count} ({reason}){_keys(samples, count)}")
        lines.append(self._footer())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The ``--report FILE.md`` text: rows repaired per rule and policy, then what is left."""
        title = "Repair report" if self.applied else "Repair plan (dry run: nothing written)"
        out = [f"# {title}", ""]
        if self.repair_id is not None:
            out += [f"Repair id **{self.repair_id}**" + (" (resumed)" if self.resumed else "")
                    + f"; log `{self.log_table}`; undo with `{self.restore_command}`.", ""]
        out += [f"- rows {'changed' if self.applied else 'to change'}: {self.changed}",
                f"- rows left for a person: {self.for_person}", "",
                "## Rows repaired per rule and policy", "",
                "| rule | table | policy | changed | cascaded | refused | ambiguous | left |",
                "|---|---|---|---:|---:|---:|---:|---:|"]
        for rule in self.rules:
            if rule.skipped:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | skipped: "
                           f"{_md(rule.skipped)} | | | | | |")
            for p in rule.policies:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | {_md(p.description)} | "
                           f"{p.changed} | {p.cascaded} | {p.refused} | {p.ambiguous} | {p.left} |")
            if not rule.policies and not rule.skipped:
                out.append(f"| {_md(rule.rule)} | {_md(rule.table)} | (none) | 0 | 0 | 0 | 0 "
                           f"| {rule.unmatched} |")
        out += ["", "## Rows left for a person", ""]
        left = [(rule, reason, count, samples) for rule in self.rules
                for reason, count, samples in rule.left_reasons()]
        if not left:
            out.append("None.")
        else:
            out += ["| rule | why | rows | examples (primary key) |", "|---|---|---:|---|"]
            out += [f"| {_md(rule.rule)} | {_md(reason)} | {count} | "
                    f"{_md(', '.join(samples))}{', ...' if count > len(samples) else ''} |"
                    for rule, reason, count, samples in left]
        return "\n".join(out) + "\n"

    def _footer(self) -> str:
        if not self.applied:
            return f"dry run: nothing written; {self.for_person} row(s) would be left for a person"
        if self.repair_id is None:
            return "nothing to repair; nothing written"
        return (f"repair {self.repair_id}{' (resumed)' if self.resumed else ''}: "
                f"{self.changed} row(s) changed, {self.for_person} left for a person; "
                f"undo with: {self.restore_command}")


def _keys(samples: Sequence[str], count: int) -> str:
    if not samples:
        return ""
    return ": " + ", ".join(samples) + (", ..." if count > len(samples) else "")


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class RepairProgress:
    """Reported after every batch: the rule, the policy, and its rows so far."""

    rule: str
    policy: str
    changed: int
    noted: int


Progress = Callable[[RepairProgress], None]


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Referrer:
    """Rows of ``child`` that point at the table: a foreign key, in the catalog or declared."""

    name: str
    child: TableInfo
    columns: tuple[str, ...]
    parent_columns: tuple[str, ...]

    def match(self, child: str, parent: str) -> str:
        return " AND ".join(f"{child}.{quote(c)} = {parent}.{quote(p)}"
                            for c, p in zip(self.columns, self.parent_columns, strict=True))

    def exists(self, parent: str, child: str = "ai_c") -> str:
        return f"EXISTS (SELECT 1 FROM {self.child.sql} {child} WHERE {self.match(child, parent)})"

    @property
    def label(self) -> str:
        return f"{self.child.label}.{'/'.join(self.columns)} ({self.name})"


class Tables:
    """Catalog look-ups of one run, cached: tables and the foreign keys pointing at them."""

    def __init__(self, conn: Connection, declared_fks: Sequence[ForeignKeyRule]) -> None:
        self.conn = conn
        self.declared_fks = declared_fks
        self._tables: dict[int, TableInfo] = {}
        self._referrers: dict[int, list[Referrer]] = {}

    def table(self, oid: int) -> TableInfo:
        if oid not in self._tables:
            self._tables[oid] = load_table(self.conn, oid)
        return self._tables[oid]

    def find(self, name: TableName) -> TableInfo | None:
        oid = catalog.table_oid(self.conn, name)
        return self.table(oid) if oid is not None else None

    def referrers(self, table: TableInfo) -> list[Referrer]:
        """Every FK onto ``table``: catalog ones (NOT VALID and self-references included)
        and those the models declare but the database may not have yet."""
        if table.oid not in self._referrers:
            found: dict[tuple[Any, ...], Referrer] = {}
            for ref in [*self._catalog_referrers(table), *self._declared_referrers(table)]:
                found.setdefault((ref.child.oid, ref.columns, ref.parent_columns), ref)
            self._referrers[table.oid] = list(found.values())
        return self._referrers[table.oid]

    def _catalog_referrers(self, table: TableInfo) -> list[Referrer]:
        rows = self.conn.execute(text(
            "SELECT oid, conname, conrelid FROM pg_constraint WHERE contype = 'f' "
            "AND confrelid = :oid AND conparentid = 0 ORDER BY conname"
        ), {"oid": table.oid}).all()
        found = []
        for oid, name, child in rows:
            state = catalog.foreign_key_state(self.conn, int(oid))
            found.append(Referrer(name, self.table(int(child)), state.columns,
                                  state.referent_columns))
        return found

    def _declared_referrers(self, table: TableInfo) -> list[Referrer]:
        found = []
        for fk in self.declared_fks:
            if catalog.table_oid(self.conn, fk.referent) != table.oid:
                continue
            child = self.find(fk.table)
            if child is None or not set(fk.columns) <= set(child.columns) \
                    or not set(fk.referent_columns) <= set(table.columns):
                continue  # the child table or column does not exist yet: nothing refers
            found.append(Referrer(fk.name, child, tuple(fk.columns), tuple(fk.referent_columns)))
        return found


@dataclass
class Target:
    """A rule resolved against the database: its table and the SQL of its partitions."""

    rule: Rule
    table: TableInfo
    tables: Tables

    @property
    def rule_id(self) -> str:
        """How the log and ``--rule`` name the rule: unique per table."""
        if isinstance(self.rule, NotNullRule):
            return f"{self.table.label}.{self.rule.column} NOT NULL"
        return f"{self.rule.label} on {self.table.label}"

    @property
    def policies(self) -> tuple[Policy, ...]:
        return tuple(self.rule.policies)

    @property
    def violation(self) -> str:
        return f"({self.rule.violation_sql('t')})"

    def where(self, index: int) -> str:
        where = self.policies[index].where
        return f"COALESCE(({where}), false)" if where else "true"

    def scope(self, index: int) -> str:
        """Violating rows this policy takes: its ``where``, and no earlier policy's."""
        earlier = [f"NOT {self.where(i)}" for i in range(index)]
        return " AND ".join([self.violation, self.where(index), *earlier])

    def partition(self) -> str:
        """The index of the policy that takes a violating row, -1 for none."""
        if not self.policies:
            return "-1"
        whens = " ".join(f"WHEN {self.where(i)} THEN {i}" for i in range(len(self.policies)))
        return f"CASE {whens} ELSE -1 END"

    def plans(self) -> list[PolicyPlan]:
        return [plan_for(self, i, p) for i, p in enumerate(self.policies)]


# --------------------------------------------------------------------------- policy plans


@dataclass
class Batch:
    """What one apply step needs: the connection, the log, the repair, the budget."""

    conn: Connection
    log: LogTables
    repair_id: int
    size: int
    settings: Settings
    progress: Progress | None
    resumed: bool = False
    logged: int = 0
    analyzed_at: int = 0
    guarded: bool = False
    still: int = 0

    def start_rule(self) -> None:
        """Before each rule: guard only a resumed run, until the rule shows it needs it."""
        self.guarded = self.resumed
        self.still = 0

    def wrote(self, rows: int) -> None:
        """Count log rows written; ANALYZE the log whenever it has grown by half.

        Only while rows are looked up in the log (the guard): a log filled
        faster than autovacuum notices keeps the planner's "never analyzed: 10
        pages" guess, and a nested loop over the whole log per row turns
        seconds into minutes. A handful of ANALYZEs of the key columns (the
        jsonb images are not sampled) keep the plans right.
        """
        self.logged += rows
        if self.guarded:
            self.analyze()

    def analyze(self) -> None:
        if self.logged > 1000 and self.logged >= 1.5 * self.analyzed_at:
            raw.execute(self.conn, f"ANALYZE {self.log.log_sql} "
                                   "(repair_id, schema_name, table_name, rule, pk)")
            self.analyzed_at = self.logged


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
        return [_table_privilege(self.table, "UPDATE")]

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
            found = run_short(batch.conn, ["SET LOCAL synchronize_seqscans = off",
                                           self.batch_sql(batch, after)],
                              batch.settings, doing)
            counts = {action: int(n) for action, n, _ in found}
            picked = counts.pop("picked")
            still = counts.pop("still", 0)
            if still:  # a change left rows violating: from now on, skip logged rows
                batch.guarded = True
                batch.still += still
            batch.wrote(sum(counts.values()))
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
        return int(counted[0][0])

    @staticmethod
    def counted(changed: str | None = None) -> str:
        """Rows picked by the batch, log rows written per action, and for updates the
        changed rows that still violate (``_ai_still`` of ``changed``)."""
        still = (f" UNION ALL SELECT 'still', count(*) FILTER (WHERE _ai_still), NULL "
                 f"FROM {changed}") if changed else ""
        return ("SELECT 'picked', count(*), max(_ai_tid)::text FROM ai_picked "
                f"UNION ALL SELECT action, count(*), NULL FROM logged GROUP BY action{still}")


class UpdatePlan(PolicyPlan):
    """Invalidate and SetValue: one UPDATE per batch, before- and after-image logged."""

    def assignments(self) -> str:
        raise NotImplementedError

    def batch_sql(self, batch: Batch, after: str) -> str:
        t = self.table
        picked = (f"SELECT t.ctid AS _ai_tid, to_jsonb(t) AS _ai_before FROM {t.sql} AS t "
                  f"WHERE {self.pick(batch, after)} LIMIT {int(batch.size)}")
        changed = (f"UPDATE {t.sql} AS t SET {self.assignments()} FROM ai_picked "
                   "WHERE t.ctid = ai_picked._ai_tid "
                   "AND t.ctid = ANY(ARRAY(SELECT _ai_tid FROM ai_picked)) "
                   f"RETURNING {t.pk_json('t')} AS pk, ai_picked._ai_before AS before, "
                   f"to_jsonb(t) AS after, {self.target.violation} AS _ai_still")
        logged = self.insert_log(batch, [
            self.log_row(batch, t, "'update'", "c.pk", "c.before", "c.after") + " FROM ai_changed c"
        ])
        return (f"WITH ai_picked AS ({picked}), ai_changed AS ({changed}), "
                f"logged AS ({logged}) {self.counted('ai_changed')}")


class InvalidatePlan(UpdatePlan):
    policy: Invalidate

    def check(self) -> None:
        self.assignments()

    def assignments(self) -> str:
        if not self.policy.values:
            raise ConfigurationError(f"{self.target.rule_id}: Invalidate needs values={{...}}")
        return ", ".join(f"{quote(column)} = {_value_sql(value)}"
                         for column, value in self.policy.values.items())


class SetValuePlan(UpdatePlan):
    policy: SetValue

    def check(self) -> None:
        self.assignments()

    def assignments(self) -> str:
        column = self.policy.column or _rule_column(self.target.rule)
        if column is None:
            raise ConfigurationError(
                f"{self.target.rule_id}: SetValue needs column=... (only NOT NULL rules and "
                "single-column foreign keys have a column of their own)"
            )
        value = self.policy.expression if self.policy.expression is not None \
            else lit(self.policy.value)
        return f"{quote(column)} = {value}"


def _table_privilege(table: TableInfo, privilege: str) -> tuple[str, str]:
    return (f"has_table_privilege({table.oid}, {lit(privilege)})",
            f"{privilege} on {table.label}")


def _value_sql(value: Any) -> str:
    return str(value) if isinstance(value, Sql) else lit(value)


def _rule_column(rule: Rule) -> str | None:
    if isinstance(rule, NotNullRule):
        return rule.column
    if isinstance(rule, ForeignKeyRule) and len(rule.columns) == 1:
        return rule.columns[0]
    return None


class DeletePlan(PolicyPlan):
    """Delete (and Quarantine): refuse rows still referenced; cascade one level if asked."""

    action = "delete"
    policy: Delete
    archive: TableName | None = None

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
                 f"{self.kids_sql()} AS _ai_kids FROM {t.sql} AS t "
                 f"WHERE {self.scope} AND {extra}")
        return (f"SELECT _ai_pk, CASE WHEN _ai_note IS NULL THEN {lit(self.action)} "
                "ELSE 'refused' END AS _ai_action, _ai_note, NULL::text AS _ai_detail, "
                "CASE WHEN _ai_note IS NULL THEN _ai_kids ELSE 0 END AS _ai_kids "
                f"FROM ({inner}) ai_s")

    def privileges(self) -> list[tuple[str, str]]:
        if not self.cascade:
            return [_table_privilege(self.table, "DELETE")]
        tables = [self.table, *(r.child for r in self.referrers())]
        return [_table_privilege(t, p) for t in tables for p in ("UPDATE", "DELETE")]

    def prepare(self, batch: Batch) -> bool:
        # Refusals are decided over the whole scope before anything is deleted, so
        # a row referenced only by rows this policy deletes is still refused, as
        # the dry run said, whatever order the batches take.
        if self.refusals() and self.log_classified(batch, ("refused",)):
            batch.guarded = True
        return True

    def batch_sql(self, batch: Batch, after: str) -> str:
        t = self.table
        keys = sorted({c for ref in self.referrers() for c in ref.parent_columns}) \
            if self.cascade else []
        key_list = "".join(f", t.{quote(c)}" for c in keys)
        # A cascade locks the parents first, so that no child is deleted for a
        # parent that a concurrent change keeps (see the module docstring).
        lock = " FOR UPDATE OF t" if self.cascade else ""
        picked = (f"SELECT t.ctid AS _ai_tid, {t.pk_json('t')} AS _ai_pk, "
                  f"{self.note_sql()} AS _ai_note{key_list} FROM {t.sql} AS t "
                  f"WHERE {self.pick(batch, after)} LIMIT {int(batch.size)}{lock}")
        ctes = [f"ai_picked AS ({picked})"]
        logs = []
        if self.cascade:
            for i, ref in enumerate(self.referrers()):
                ctes.append(f"ai_kids{i} AS ({self._delete_kids(ref)})")
                logs.append(self.log_row(batch, ref.child, "'cascade'", "k.pk", "k.before")
                            + f" FROM ai_kids{i} k")
        ctes.append(f"ai_gone AS (DELETE FROM {t.sql} AS t WHERE t.ctid = ANY(ARRAY("
                    "SELECT _ai_tid FROM ai_picked WHERE _ai_note IS NULL)) "
                    f"RETURNING {t.pk_json('t')} AS pk, to_jsonb(t) AS before)")
        ctes += self.extra_ctes()
        logs.append(self.log_row(batch, t, lit(self.action), "g.pk", "g.before",
                                 archive=self.archive) + " FROM ai_gone g")
        logs.append(self.log_row(batch, t, "'refused'", "p._ai_pk", note="p._ai_note")
                    + " FROM ai_picked p WHERE p._ai_note IS NOT NULL")
        ctes.append(f"logged AS ({self.insert_log(batch, logs)})")
        return "WITH " + ", ".join(ctes) + " " + self.counted()

    def _delete_kids(self, ref: Referrer) -> str:
        """Referencing rows of the picked rows; not those picked themselves (self-reference)."""
        parent = " AND ".join(f"ai_c.{quote(c)} = p.{quote(k)}"
                              for c, k in zip(ref.columns, ref.parent_columns, strict=True))
        itself = (" AND ai_c.ctid <> ALL(ARRAY(SELECT _ai_tid FROM ai_picked))"
                  if ref.child.oid == self.table.oid else "")
        return (f"DELETE FROM {ref.child.sql} AS ai_c USING ai_picked p "
                f"WHERE p._ai_note IS NULL AND {parent}{itself} "
                f"RETURNING {ref.child.pk_json('ai_c')} AS pk, to_jsonb(ai_c) AS before")

    def extra_ctes(self) -> list[str]:
        """More CTEs over ``ai_gone`` (Quarantine copies the rows to its archive)."""
        return []


class QuarantinePlan(DeletePlan):
    """Move rows to ``<table>_quarantine`` (same shape), deleting them from the table."""

    action = "quarantine"
    policy: Quarantine

    @property
    def cascade(self) -> bool:
        return False

    @property
    def archive(self) -> TableName:  # type: ignore[override]
        name = self.policy.archive or truncated_name(self.table.name, "_quarantine")
        return TableName(name, self.policy.archive_schema or self.table.schema)

    def privileges(self) -> list[tuple[str, str]]:
        archive = self.target.tables.find(self.archive)
        if archive is not None:
            return [*super().privileges(), _table_privilege(archive, "INSERT")]
        schema = self.archive.schema or "public"
        return [*super().privileges(),
                (f"has_schema_privilege({lit(schema)}, 'CREATE')",
                 f"CREATE on schema {schema} (to create the archive {self.archive})")]

    def prepare(self, batch: Batch) -> bool:
        # LIKE copies columns and NOT NULL, not identity, defaults or generation
        # expressions: the archive keeps exactly the values the rows had.
        run_short(batch.conn, f"CREATE TABLE IF NOT EXISTS {self.archive.sql} "
                              f"(LIKE {self.table.sql})", batch.settings,
                  f"repair {self.target.rule_id}: creating {self.archive}")
        return super().prepare(batch)

    def extra_ctes(self) -> list[str]:
        a = self.archive.sql
        return [f"ai_archived AS (INSERT INTO {a} SELECT r.* FROM ai_gone g "
                f"CROSS JOIN LATERAL jsonb_populate_record(NULL::{a}, g.before) r)"]


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
        column = self.policy.column or _rule_column(self.target.rule)
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


class ManualPlan(PolicyPlan):
    """Report only: the rows are left for a person with the policy's reason."""

    policy: Manual

    @property
    def writes(self) -> bool:
        return False

    def classify_sql(self, extra: str = "true") -> str:
        return self._rows_as("'left'", lit(self.policy.reason), extra)

    def privileges(self) -> list[tuple[str, str]]:
        return []


_PLANS: dict[type[Policy], type[PolicyPlan]] = {
    Delete: DeletePlan, Quarantine: QuarantinePlan, Invalidate: InvalidatePlan,
    SetValue: SetValuePlan, Relink: RelinkPlan, Manual: ManualPlan,
}


def plan_for(target: Target, index: int, policy: Policy) -> PolicyPlan:
    for kind, plan in _PLANS.items():
        if isinstance(policy, kind):
            return plan(target, index, policy)
    raise ConfigurationError(f"{target.rule_id}: unknown policy {policy!r}")


# --------------------------------------------------------------------------- public API


def repair(engine: Engine | Connection, declared: DeclaredRules, *, apply: bool = False,
           batch_size: int = 10_000, log_table: str = DEFAULT_LOG_TABLE,
           rules: Sequence[str] | None = None, progress: Progress | None = None,
           settings: Settings | None = None) -> RepairResult:
    """Repair (or, by default, plan the repair of) the rows that break ``declared`` rules.

    ``rules`` keeps only the rules named: constraint name, label (``table.column
    NOT NULL``) or the id the report shows. See the module docstring for what
    is written and when.
    """
    fks = [r for r in declared.rules if isinstance(r, ForeignKeyRule)]
    return _repair(engine, declared.rules, fks, apply=apply, batch_size=batch_size,
                   log_table=log_table, progress=progress, settings=settings, names=rules)


def repair_rule(bind: Engine | Connection, rule: Rule, declared: DeclaredRules | None = None, *,
                apply: bool = True, batch_size: int = 10_000,
                log_table: str = DEFAULT_LOG_TABLE, progress: Progress | None = None,
                settings: Settings | None = None) -> RepairResult:
    """Repair the rows of ONE rule, e.g. from an operation between ADD NOT VALID and VALIDATE.

    ``bind`` may be the migration's connection inside ``autocommit_block()``:
    batches commit one by one. ``declared`` supplies the foreign keys the models
    declare (Delete refuses rows they reference); the rule's own ``policies``
    say what to do. Applies by default; the result's ``repair_id`` undoes it.
    """
    fks = [r for r in (declared.rules if declared else []) if isinstance(r, ForeignKeyRule)]
    return _repair(bind, [rule], fks, apply=apply, batch_size=batch_size, log_table=log_table,
                   progress=progress, settings=settings, names=None)


def _repair(bind: Engine | Connection, rules: Sequence[Rule], fks: Sequence[ForeignKeyRule], *,
            apply: bool, batch_size: int, log_table: str, progress: Progress | None,
            settings: Settings | None, names: Sequence[str] | None) -> RepairResult:
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size {batch_size}: must be at least 1")
    log = LogTables.parse(log_table)
    result = RepairResult(applied=apply, log_table=log.label)
    with autocommit_connection(bind) as conn:
        targets, skipped = _targets(rules, Tables(conn, fks), names)
        targets, unreadable = _probe(conn, targets)
        skipped += unreadable
        for target in targets:
            for plan in target.plans():
                plan.check()
        if not apply:
            _dry_run(conn, targets, result)
        else:
            _apply_all(conn, targets, log, result, batch_size=batch_size,
                       settings=settings or Settings(), progress=progress)
        result.rules += skipped
    return result


def _targets(rules: Sequence[Rule], tables: Tables, names: Sequence[str] | None
             ) -> tuple[list[Target], list[RuleOutcome]]:
    """The selected rules resolved against the catalog, and those that cannot be (no table)."""
    targets: list[Target] = []
    skipped: list[RuleOutcome] = []
    wanted = set(names or ())
    seen: set[str] = set()
    for rule in rules:
        table = tables.find(rule.table)
        target = Target(rule, table, tables) if table is not None else None
        aliases = {rule.name, rule.label} | ({target.rule_id} if target else set())
        if wanted and not wanted & aliases:
            continue
        seen |= aliases
        if target is None:
            skipped.append(RuleOutcome(rule.label, rule.kind, str(rule.table),
                                       skipped=f"table {rule.table} does not exist"))
        elif isinstance(rule, ForeignKeyRule) and tables.find(rule.referent) is None:
            skipped.append(RuleOutcome(target.rule_id, rule.kind, target.table.label,
                                       skipped=f"referenced table {rule.referent} does not "
                                               "exist"))
        else:
            targets.append(target)
    if wanted - seen:
        known = ", ".join(sorted(r.label for r in rules)) or "none"
        raise ConfigurationError(f"--rule {', '.join(sorted(wanted - seen))}: no such rule; "
                                 f"declared rules: {known}")
    return targets, skipped


def _probe(conn: Connection, targets: Sequence[Target]
           ) -> tuple[list[Target], list[RuleOutcome]]:
    """Skip, with the reason, rules whose SQL the database cannot run yet.

    Typically a CHECK on a column that a pending revision adds: its rows can
    only be repaired during that migration (``repair=True`` on its operation).
    """
    usable: list[Target] = []
    skipped: list[RuleOutcome] = []
    for target in targets:
        try:
            raw.execute(conn, f"EXPLAIN SELECT 1 FROM {target.table.sql} AS t "
                              f"WHERE {target.violation}")
        except DBAPIError as err:
            hint = ("; if a pending revision adds it, give that revision's ensure_* "
                    "operation repair=True" if catalog.sqlstate(err) == "42703" else "")
            skipped.append(RuleOutcome(target.rule_id, target.rule.kind, target.table.label,
                                       skipped=f"{first_line(err)}{hint}"))
        else:
            usable.append(target)
    return usable, skipped


def _has_violations(conn: Connection, target: Target) -> bool:
    return bool(_query(conn, target, f"SELECT EXISTS (SELECT 1 FROM {target.table.sql} AS t "
                                     f"WHERE {target.violation})").scalar())


def _query(conn: Connection, target: Target, sql: str, doing: str = "finding violating rows"
           ) -> Any:
    """Run a read; a predicate PostgreSQL rejects becomes one line naming the rule."""
    try:
        return raw.execute(conn, sql)
    except DBAPIError as err:
        raise PredicateError(
            f"rule {target.rule_id}: {doing}: PostgreSQL rejects the rule's SQL or a policy's "
            f"where/match/expression: {first_line(err)}; fix the declaration"
        ) from err


# --------------------------------------------------------------------------- dry run


def _dry_run(conn: Connection, targets: Sequence[Target], result: RepairResult) -> None:
    """Every count from one snapshot, in a READ ONLY transaction: nothing can be written."""
    with transaction(conn, read_only=True):
        for target in targets:
            result.rules.append(_plan_rule(conn, target))


def _plan_rule(conn: Connection, target: Target) -> RuleOutcome:
    outcome = RuleOutcome(target.rule_id, target.rule.kind, target.table.label)
    pk = target.table.pk_json("t")
    total, unmatched, samples = _query(conn, target,
        f"SELECT count(*), count(*) FILTER (WHERE _ai_idx < 0), (array_agg(_ai_pk ORDER BY "
        f"_ai_pk) FILTER (WHERE _ai_idx < 0))[1:{SAMPLE}] FROM (SELECT {target.partition()} "
        f"AS _ai_idx, {pk} AS _ai_pk FROM {target.table.sql} AS t WHERE {target.violation}) s"
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
    rows = _query(conn, plan.target,
        "SELECT _ai_action, _ai_note, count(*), COALESCE(sum(_ai_kids), 0), "
        f"(array_agg(_ai_pk ORDER BY _ai_pk) FILTER (WHERE _ai_action NOT IN {CHANGES_SQL}))"
        f"[1:{SAMPLE}], (array_agg(_ai_detail ORDER BY _ai_pk) FILTER (WHERE _ai_action NOT IN "
        f"{CHANGES_SQL}))[1:{SAMPLE}] FROM ({plan.classify_sql()}) c GROUP BY 1, 2",
        f"planning {plan.description}",
    ).all()
    for action, note, count, kids, keys, details in rows:
        policy.add(action, note, int(count), _samples(keys, details))
        policy.cascaded += int(kids)


def _samples(keys: Sequence[Any] | None, details: Sequence[str | None] | None) -> list[str]:
    details = list(details or [])
    out = []
    for i, key in enumerate(keys or []):
        detail = details[i] if i < len(details) else None
        out.append(format_key(key) + (f" ({detail})" if detail else ""))
    return out


# --------------------------------------------------------------------------- apply


def _preflight(conn: Connection, targets: Sequence[Target], log: LogTables) -> None:
    """Fail with one line before writing anything if this session cannot do the repair."""
    if raw.execute(conn, "SHOW transaction_read_only").scalar() == "on":
        raise IntegrityError(
            "repair --apply: this session is read-only (default_transaction_read_only is on, "
            "or the server is a standby); connect as a role that may write. Nothing was written"
        )
    missing = _missing_log_privileges(conn, log)
    for target in targets:
        for plan in target.plans():
            for granted, needed in plan.privileges():
                if not raw.execute(conn, f"SELECT {granted}").scalar():
                    missing.append(f"{needed} (for {plan.description} of {target.rule_id})")
    if missing:
        user = raw.execute(conn, "SELECT current_user").scalar()
        raise IntegrityError(f"repair --apply: permission denied: role {user} lacks "
                             f"{'; '.join(dict.fromkeys(missing))}. Nothing was written")


def _missing_log_privileges(conn: Connection, log: LogTables) -> list[str]:
    if log.exists(conn):
        return [f"{privilege} on {name}"
                for name, sql in ((log.label, log.log_sql),
                                  (f"{log.schema}.{log.runs_name}", log.runs_sql))
                for privilege in ("SELECT", "INSERT", "UPDATE")
                if not raw.execute(conn, f"SELECT has_table_privilege({lit(sql)}, "
                                         f"{lit(privilege)})").scalar()]
    schema_exists = raw.execute(conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname "
                                      f"= {lit(log.schema)})").scalar()
    if schema_exists:
        ok = raw.execute(conn, f"SELECT has_schema_privilege({lit(log.schema)}, 'CREATE')")
        return [] if ok.scalar() else [f"CREATE on schema {log.schema} (for the repair log)"]
    ok = raw.execute(conn, "SELECT has_database_privilege(current_database(), 'CREATE')")
    return [] if ok.scalar() else ["CREATE on this database (to create the repair log schema "
                                   f"{log.schema})"]


def _apply_all(conn: Connection, targets: Sequence[Target], log: LogTables,
               result: RepairResult, *, batch_size: int, settings: Settings,
               progress: Progress | None) -> None:
    """Probe, check privileges, then repair rule by rule; a no-op run writes nothing."""
    with transaction(conn, read_only=True):
        todo = {id(t) for t in targets if _has_violations(conn, t)}
    if not todo:
        result.rules += [RuleOutcome(t.rule_id, t.rule.kind, t.table.label) for t in targets]
        return
    _preflight(conn, [t for t in targets if id(t) in todo], log)
    with exclusive(conn, log, "repair --apply"):
        run_short(conn, log.create_sql(), settings, f"creating the repair log {log.label}")
        ids = sorted(t.rule_id for t in targets)
        result.repair_id, result.resumed = _repair_record(conn, log, ids, batch_size, settings)
        batch = Batch(conn, log, result.repair_id, batch_size, settings, progress,
                      resumed=result.resumed)
        for target in targets:
            if id(target) in todo:
                result.rules.append(_apply_rule(conn, target, batch))
            else:
                result.rules.append(RuleOutcome(target.rule_id, target.rule.kind,
                                                target.table.label))
        summary = json.dumps(result.to_dict(), default=str)
        run_short(conn, f"UPDATE {log.runs_sql} SET status = 'done', finished_at = now(), "
                        f"summary = {lit(summary)}::jsonb WHERE repair_id = {result.repair_id}",
                  settings, "finishing the repair record")


def _apply_rule(conn: Connection, target: Target, batch: Batch) -> RuleOutcome:
    batch.start_rule()
    for plan in target.plans():
        try:
            plan.apply(batch)
        except DBAPIError as err:
            raise translate(err, f"repair {target.rule_id}, {plan.description}") from err
    return _summarise(conn, target, batch)


def _repair_record(conn: Connection, log: LogTables, ids: list[str], batch_size: int,
                   settings: Settings) -> tuple[int, bool]:
    """Resume a crashed repair of the same rules, else start a new one.

    We hold the log's advisory lock, so a record still ``running`` belongs to a
    process that died: its committed batches are complete, and the guard makes
    the new run skip every row it already logged.
    """
    rules = lit(json.dumps(ids))
    found = run_short(conn, f"SELECT repair_id FROM {log.runs_sql} WHERE status = 'running' "
                            f"AND rules = {rules}::jsonb ORDER BY repair_id DESC LIMIT 1",
                      settings, "looking for an interrupted repair")
    if found:
        return int(found[0][0]), True
    created = run_short(conn, f"INSERT INTO {log.runs_sql} (rules, batch_size) VALUES "
                              f"({rules}::jsonb, {int(batch_size)}) RETURNING repair_id",
                        settings, "starting the repair record")
    return int(created[0][0]), False


def _summarise(conn: Connection, target: Target, batch: Batch) -> RuleOutcome:
    """The rule's outcome: what the log says was done, plus what still violates now."""
    outcome = RuleOutcome(target.rule_id, target.rule.kind, target.table.label)
    plans = target.plans()
    outcome.policies = [PolicyOutcome(p.index, p.policy.kind, p.description) for p in plans]
    log = batch.log
    noted = f"FILTER (WHERE action NOT IN {CHANGES_SQL})"
    with transaction(conn, read_only=True):
        logged = raw.execute(conn,
            "SELECT policy_index, action, note, count(*), "
            f"(array_agg(pk ORDER BY log_id) {noted})[1:{SAMPLE}], "
            f"(array_agg(detail ORDER BY log_id) {noted})[1:{SAMPLE}] FROM {log.log_sql} "
            f"WHERE repair_id = {int(batch.repair_id)} AND rule = {lit(target.rule_id)} "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).all()
    counted_now = _may_leave_rows(plans, batch, logged)
    now: list[Any] = []
    if counted_now:
        batch.analyze()  # the scan looks each violating row up in the log
        with transaction(conn, read_only=True):
            now = _query(conn, target, _still_sql(target, batch)).all()
    for index, action, note, count, keys, details in logged:
        if 0 <= index < len(plans):
            outcome.policies[index].add(action, note, int(count), _samples(keys, details))
    if counted_now:
        _add_current(outcome, plans, now)
    outcome.violating = sum(p.changed + p.refused + p.ambiguous + p.left
                            for p in outcome.policies) + outcome.unmatched
    return outcome


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
