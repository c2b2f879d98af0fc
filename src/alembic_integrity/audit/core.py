"""Audit: for every declared rule, its state in the database and the rows that break it now.

The audit never changes anything, and it reads each table as few times as
possible, because it is meant to run against production:

* States are read from ``pg_catalog`` in an ordinary transaction that is
  rolled back (comparing a CHECK's definition needs a scratch temp table,
  which a READ ONLY transaction forbids). Every predicate is also parsed
  there, one rule at a time, so one bad predicate is one problem, not a
  failed pass over its whole table.
* Rows are counted in a separate ``READ ONLY`` transaction (optionally under
  ``statement_timeout``). All CHECK, NOT NULL and expectation rules of a table
  are counted in ONE scan of it; each foreign key is one anti-join.

Anything that keeps a rule from being audited (missing table or column, a
predicate PostgreSQL rejects, a query that fails or times out) becomes one
line in :attr:`AuditReport.problems`, and the audit goes on with the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import (
    CatalogError,
    IntegrityError,
    PredicateError,
    ServerUnavailable,
    first_line,
    sqlstate,
)
from ..pg import catalog, raw
from ..pg.database import shown
from ..pg.identifiers import TableName, quote
from ..pg.progress import Progress, ProgressCallback
from ..rules import compare as rule_compare
from ..rules.kinds import CheckRule, ExpectRule, ForeignKeyRule, NotNullRule, Rule
from ..rules.metadata import DeclaredRules
from . import violations

__all__ = ["STATES", "AuditReport", "Finding", "Progress", "audit"]

STATES = ("absent", "not_valid", "valid", "other_definition", "audit_only")
"""What a rule can be in the database; ``audit_only`` is an expectation (never a constraint)."""


_QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)
_GUARANTEED = "validated, so no row can break it; not counted"


@dataclass
class Finding:
    """One audited rule: where it stands and which rows break it now."""

    rule: Rule
    state: str
    violations: int
    sample: list[Any]
    key_columns: list[str]
    detail: str = ""

    @property
    def label(self) -> str:
        return self.rule.label

    @property
    def kind(self) -> str:
        return self.rule.kind

    @property
    def table(self) -> TableName:
        return self.rule.table


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    database: str = ""
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def violations_total(self) -> int:
        return sum(f.violations for f in self.findings)

    @property
    def exit_code(self) -> int:
        """2: something could not be audited; 1: rows break a rule; 0: all clean."""
        if self.problems:
            return 2
        return 1 if self.violations_total else 0


@dataclass
class _Audited:
    rule: Rule
    state: str
    detail: str


@dataclass
class _TablePlan:
    """What the counting transaction needs for one table, all read beforehand."""

    table: TableName
    key: str
    key_columns: list[str]
    order: list[str]
    scanned: list[_Audited] = field(default_factory=list)  # CHECK, NOT NULL, expectation
    joined: list[_Audited] = field(default_factory=list)  # foreign keys


def audit(engine: Engine, declared: DeclaredRules, *, sample: int = 5,
          statement_timeout_ms: int | None = None, progress: ProgressCallback | None = None,
          count_valid: bool = False) -> AuditReport:
    """Audit every rule in ``declared`` against the database behind ``engine``.

    A validated CHECK or NOT NULL cannot have a violating row (PostgreSQL
    checks every write), so it is reported with 0 and not counted, unless
    ``count_valid`` (e.g. to catch a predicate that is not really immutable).
    Foreign keys are always counted: rows written with triggers disabled
    (``session_replication_role = replica``) bypass even a valid one.
    """
    if sample < 0:
        raise ValueError("sample must be >= 0")
    report = AuditReport(problems=list(declared.problems), database=shown(engine.url))
    try:
        with engine.connect() as conn:
            plans = _inspect(conn, declared, statement_timeout_ms, report.problems)
            if not count_valid:
                _settle_valid(plans, report)
            _count(conn, plans, sample, statement_timeout_ms, progress, report)
    except OperationalError as err:
        raise ServerUnavailable(f"lost the connection to {report.database} during the audit: "
                                f"{first_line(err)}") from err
    position = {id(rule): i for i, rule in enumerate(declared.rules)}
    report.findings.sort(key=lambda f: position.get(id(f.rule), len(position)))
    return report


# --------------------------------------------------------------------------- states


def _inspect(conn: Connection, declared: DeclaredRules, timeout_ms: int | None,
             problems: list[str]) -> list[_TablePlan]:
    """States and parse checks, in a transaction that is always rolled back."""
    plans = []
    with conn.begin() as tx:
        _set_timeout(conn, timeout_ms)
        for table in declared.tables:
            plan = _inspect_table(conn, table, declared.for_table(table), problems)
            if plan is not None:
                plans.append(plan)
        tx.rollback()
    return plans


def _inspect_table(conn: Connection, table: TableName, rules: list[Rule],
                   problems: list[str]) -> _TablePlan | None:
    oid = catalog.table_oid(conn, table)
    if oid is None:
        where = f"schema {table.schema!r}" if table.schema else "the search_path"
        labels = ", ".join(r.label for r in rules)
        problems.append(f"table {table} does not exist in {where}; not audited: {labels}")
        return None
    key, key_columns = violations.key_expression(conn, rules[0], "t")
    order = ["t.ctid"] if key_columns == ["ctid"] else [f"t.{quote(c)}" for c in key_columns]
    plan = _TablePlan(table, key, key_columns, order)
    for rule in rules:
        try:
            state, detail = _state(conn, oid, rule)
        except IntegrityError as err:
            problems.append(str(err))
            continue
        bucket = plan.joined if isinstance(rule, ForeignKeyRule) else plan.scanned
        bucket.append(_Audited(rule, state, detail))
    return plan


def _state(conn: Connection, oid: int, rule: Rule) -> tuple[str, str]:
    if isinstance(rule, NotNullRule):
        return _not_null_state(conn, oid, rule)
    if isinstance(rule, CheckRule):
        return _check_state(conn, oid, rule)
    if isinstance(rule, ForeignKeyRule):
        return _foreign_key_state(conn, oid, rule)
    _parse_expectation(conn, rule)
    return "audit_only", ""


def _check_state(conn: Connection, oid: int, rule: CheckRule) -> tuple[str, str]:
    wanted = rule_compare.normalized_check(conn, rule)  # raises PredicateError for a bad predicate
    live = rule_compare.live_constraint(conn, oid, rule)
    if live is None:
        return "absent", _elsewhere(conn, oid, rule)
    if live.contype != "c" or live.definition != wanted:
        return "other_definition", f"database has: {live.definition}"
    return ("valid" if live.validated else "not_valid"), _unnamed_detail(rule, live.name)


def _elsewhere(conn: Connection, oid: int, rule: CheckRule | ForeignKeyRule) -> str:
    """For an absent named rule: the same constraint under another name, if there is one."""
    if not rule.named:
        return "unnamed in the models; no constraint with this definition"
    if isinstance(rule, CheckRule):
        twin = rule_compare.find_check(conn, oid, rule)
    else:
        twin = rule_compare.find_foreign_key(conn, oid, rule)
    return f"the database has the same constraint as {twin.name}" if twin else ""


def _unnamed_detail(rule: CheckRule | ForeignKeyRule, live_name: str) -> str:
    if rule.named:
        return ""
    return f"unnamed in the models; matched by definition: {live_name}"


def _not_null_state(conn: Connection, oid: int, rule: NotNullRule) -> tuple[str, str]:
    not_null = catalog.column_not_null(conn, oid, rule.column)
    if not_null is None:
        raise CatalogError(f"rule {rule.label}: table {rule.table} has no column "
                           f"{rule.column!r}; not audited")
    if not_null:
        return "valid", ""
    if catalog.constraint(conn, oid, rule.name) is None:
        return "absent", ""  # no helper: skip the scratch table, its predicate is ours
    state, detail = _check_state(conn, oid, rule.as_check())
    if state == "valid":
        return "valid", f"helper check {rule.name} validated; SET NOT NULL still to run"
    if state == "not_valid":
        return "not_valid", f"helper check {rule.name} NOT VALID"
    return state, detail


def _foreign_key_state(conn: Connection, oid: int, rule: ForeignKeyRule) -> tuple[str, str]:
    _require_columns(conn, oid, rule.table, rule.columns, rule)
    referent = catalog.table_oid(conn, rule.referent)
    if referent is None:
        raise CatalogError(f"foreign key {rule.name} on {rule.table}: the referenced table "
                           f"{rule.referent} does not exist; not audited")
    _require_columns(conn, referent, rule.referent, rule.referent_columns, rule)
    live = rule_compare.live_constraint(conn, oid, rule)
    if live is None:
        return "absent", _elsewhere(conn, oid, rule)
    if not rule_compare.same_foreign_key(conn, live, rule):
        return "other_definition", f"database has: {live.definition}"
    return ("valid" if live.validated else "not_valid"), _unnamed_detail(rule, live.name)


def _require_columns(conn: Connection, oid: int, table: TableName, columns: tuple[str, ...],
                     rule: ForeignKeyRule) -> None:
    missing = [c for c in columns if catalog.column_not_null(conn, oid, c) is None]
    if missing:
        raise CatalogError(f"foreign key {rule.name} on {rule.table}: table {table} has no "
                           f"column {', '.join(map(repr, missing))}; not audited")


def _parse_expectation(conn: Connection, rule: ExpectRule) -> None:
    """EXPLAIN parses and plans without running: expectations may hold what a CHECK cannot."""
    savepoint = conn.begin_nested()
    try:
        raw.execute(conn, f"EXPLAIN SELECT 1 FROM {rule.table.sql} AS t "
                          f"WHERE {rule.violation_sql('t')}")
    except DBAPIError as err:
        raise PredicateError(
            f"expectation {rule.name} on {rule.table}: PostgreSQL rejects the predicate "
            f"{rule.condition!r}: {first_line(err)}; fix the condition text"
        ) from err
    finally:
        savepoint.rollback()


# --------------------------------------------------------------------------- counting


def _settle_valid(plans: list[_TablePlan], report: AuditReport) -> None:
    """Report valid row-level rules as clean without scanning for them."""
    for plan in plans:
        for item in [i for i in plan.scanned if i.state == "valid"]:
            detail = "; ".join(filter(None, [item.detail, _GUARANTEED]))
            report.findings.append(Finding(item.rule, item.state, 0, [],
                                           list(plan.key_columns), detail))
            plan.scanned.remove(item)


def _count(conn: Connection, plans: list[_TablePlan], sample: int, timeout_ms: int | None,
           progress: ProgressCallback | None, report: AuditReport) -> None:
    """Count every table in one READ ONLY transaction; nothing in it can write."""
    with conn.begin() as tx:
        raw.execute(conn, "SET TRANSACTION READ ONLY")
        _set_timeout(conn, timeout_ms)
        for done, plan in enumerate(plans):
            if progress is not None:
                progress(Progress(f"counting {plan.table}", done, len(plans), unit="tables"))
            _count_table(conn, plan, sample, timeout_ms, report)
        if progress is not None and plans:
            progress(Progress(f"counting {plans[-1].table}", len(plans), len(plans),
                              unit="tables"))
        tx.rollback()


def _count_table(conn: Connection, plan: _TablePlan, sample: int, timeout_ms: int | None,
                 report: AuditReport) -> None:
    if plan.scanned:
        _count_scanned(conn, plan, plan.scanned, sample, timeout_ms, report)
    for item in plan.joined:
        _count_rules(conn, plan, [item], _foreign_key_sql(plan, item.rule, sample), sample,
                     timeout_ms, report)


def _count_scanned(conn: Connection, plan: _TablePlan, items: list[_Audited], sample: int,
                   timeout_ms: int | None, report: AuditReport) -> None:
    """One pass for all; if it fails for a reason other than time, find the culprit rule."""
    sql = _single_pass_sql(plan, [i.rule for i in items], sample)
    failure = _count_rules(conn, plan, items, sql, sample, timeout_ms, report, quiet=True)
    if failure is None:
        return
    if len(items) == 1 or sqlstate(failure) == _QUERY_CANCELED:
        report.problems.append(_count_problem(plan, items, failure, timeout_ms))
        return
    for item in items:
        _count_rules(conn, plan, [item], _single_pass_sql(plan, [item.rule], sample), sample,
                     timeout_ms, report)


def _count_rules(conn: Connection, plan: _TablePlan, items: list[_Audited], sql: str,
                 sample: int, timeout_ms: int | None, report: AuditReport,
                 quiet: bool = False) -> DBAPIError | None:
    """Run one counting query in a savepoint; a failure is a problem (or returned, if quiet)."""
    try:
        with _savepoint(conn):
            row = raw.execute(conn, sql).one()
    except DBAPIError as err:
        if not quiet:
            report.problems.append(_count_problem(plan, items, err, timeout_ms))
        return err
    for index, item in enumerate(items):
        count, keys = _unpack(row, index, sample)
        report.findings.append(Finding(item.rule, item.state, count, keys,
                                       list(plan.key_columns), item.detail))
    return None


def _unpack(row: Any, index: int, sample: int) -> tuple[int, list[Any]]:
    if sample == 0:
        return int(row[index]), []
    return int(row[2 * index]), list(row[2 * index + 1] or [])


def _single_pass_sql(plan: _TablePlan, rules: list[Rule], sample: int) -> str:
    """Count (and sample) several row-level rules in ONE scan of the table."""
    tests = [f"({r.violation_sql('t')})" for r in rules]
    if sample == 0:  # the plain one-pass count, which PostgreSQL can run in parallel
        counts = ", ".join(f"count(*) FILTER (WHERE {t})" for t in tests)
        return f"SELECT {counts} FROM {plan.table.sql} AS t"
    flags = ", ".join(f"{t} AS b{i}" for i, t in enumerate(tests))
    bad = (f"SELECT {_key_columns(plan)}, {flags} FROM {plan.table.sql} AS t "
           f"WHERE {' OR '.join(tests)}")
    return _counted_and_sampled(bad, len(rules), plan, sample)


def _foreign_key_sql(plan: _TablePlan, rule: Rule, sample: int) -> str:
    """Anti-join: rows whose key columns are all set and match no referenced row."""
    assert isinstance(rule, ForeignKeyRule)
    present = " AND ".join(f"t.{quote(c)} IS NOT NULL" for c in rule.columns)
    joined = " AND ".join(f"r.{quote(rc)} = t.{quote(c)}"
                          for c, rc in zip(rule.columns, rule.referent_columns, strict=True))
    source = (f"FROM {plan.table.sql} AS t LEFT JOIN {rule.referent.sql} AS r ON {joined} "
              f"WHERE {present} AND r.{quote(rule.referent_columns[0])} IS NULL")
    if rule.match_code == "f" and len(rule.columns) > 1:  # partly NULL keys break MATCH FULL
        source = f"FROM {plan.table.sql} AS t WHERE {rule.violation_sql('t')}"
    if sample == 0:
        return f"SELECT count(*) {source}"
    return _counted_and_sampled(f"SELECT {_key_columns(plan)}, true AS b0 {source}", 1, plan,
                                sample)


def _counted_and_sampled(bad: str, rules: int, plan: _TablePlan, sample: int) -> str:
    """Counts and the first ``sample`` keys per rule, in memory bounded whatever the counts.

    ``bad`` (the violating rows only) is scanned once and kept in a tuplestore,
    which spills to disk past ``work_mem``; each sample is a top-N sort of it.
    (``array_agg(k ORDER BY k)`` would hold every violating key in memory, and
    an ordered aggregate never runs in parallel.)
    """
    order = _order_by(plan)
    parts = ", ".join(
        f"count(*) FILTER (WHERE b{i}), "
        f"ARRAY(SELECT k FROM bad WHERE b{i} ORDER BY {order} LIMIT {int(sample)})"
        for i in range(rules)
    )
    return f"WITH bad AS MATERIALIZED ({bad}) SELECT {parts} FROM bad"


def _key_columns(plan: _TablePlan) -> str:
    if _order_by(plan) == "k":
        return f"{plan.key} AS k"
    return ", ".join([f"{plan.key} AS k"] + [f"{e} AS o{i}" for i, e in enumerate(plan.order)])


def _order_by(plan: _TablePlan) -> str:
    """A one-column key sorts as itself; a composite key (shown as text) by its columns."""
    if plan.order == [plan.key]:
        return "k"
    return ", ".join(f"o{i}" for i in range(len(plan.order)))


# --------------------------------------------------------------------------- helpers


@contextmanager
def _savepoint(conn: Connection) -> Iterator[None]:
    """Roll a failed statement back without losing the READ ONLY transaction around it."""
    savepoint = conn.begin_nested()
    try:
        yield
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()


def _set_timeout(conn: Connection, timeout_ms: int | None) -> None:
    if timeout_ms is not None:
        raw.execute(conn, f"SET LOCAL statement_timeout = {int(timeout_ms)}")


def _count_problem(plan: _TablePlan, items: list[_Audited], err: DBAPIError,
                   timeout_ms: int | None) -> str:
    labels = ", ".join(i.rule.label for i in items)
    if sqlstate(err) == _QUERY_CANCELED:
        limit = f"the statement timeout ({timeout_ms} ms)" if timeout_ms else "a cancel request"
        return (f"table {plan.table}: counting {labels} was stopped by {limit}; "
                "raise --statement-timeout or audit when the database is quieter")
    return f"table {plan.table}: counting {labels} failed: {first_line(err)}"

