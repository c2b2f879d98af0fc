"""Audit: for every declared rule, its state in the database and the rows that break it now.

The audit never changes anything, anywhere: it runs in ``READ ONLY``
transactions, so it works on a hot standby and for a role that may only
SELECT. It reads the catalog once and each table as few times as possible,
because it is meant to run against production:

* States: every table, column, constraint and key the rules touch is read in
  a fixed number of round trips (:func:`..pg.catalog.table_infos`), and every
  CHECK predicate (wanted and live) and expectation is parsed in ONE
  ``EXPLAIN`` (:mod:`..pg.predicates`); the state of each rule is then decided
  in memory. A predicate PostgreSQL rejects is one problem, not a failed pass.
* Rows: ONE statement per table counts all its CHECK, NOT NULL and
  expectation rules in one scan, plus one anti-join per foreign key. Only for
  rules that have violations, a second statement takes the sample keys, each
  a bounded top-N in key order (``ORDER BY pk LIMIT n``, which the primary key
  index can drive), never a sort of every violating key.

Anything that keeps a rule from being audited (missing table or column, a
predicate PostgreSQL rejects, a query that fails or times out) becomes one
line in :attr:`AuditReport.problems`, and the audit goes on with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import PredicateError, ServerUnavailable, first_line, sqlstate
from ..pg import catalog, predicates, raw
from ..pg.catalog import TableInfo
from ..pg.database import shown
from ..pg.identifiers import TableName, quote
from ..pg.progress import Progress, ProgressCallback
from ..rules import compare as rule_compare
from ..rules.kinds import CheckRule, ExpectRule, ForeignKeyRule, NotNullRule, Rule
from ..rules.metadata import DeclaredRules

__all__ = ["STATES", "AuditReport", "Finding", "Progress", "audit"]

STATES = ("absent", "not_valid", "valid", "other_definition", "audit_only")
"""What a rule can be in the database; ``audit_only`` is an expectation (never a constraint)."""


_QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)
_TABLES_PER_TRANSACTION = 100
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
    count: int = 0


@dataclass
class _TablePlan:
    """What the counting needs for one table, all decided beforehand."""

    table: TableName
    key: str  # the key as shown (one column, a composite as text, or ctid)
    key_columns: list[str]
    order: list[str]  # the key's columns, to sample in key order
    scanned: list[_Audited] = field(default_factory=list)  # CHECK, NOT NULL, expectation
    joined: list[_Audited] = field(default_factory=list)  # foreign keys

    @property
    def items(self) -> list[_Audited]:
        return [*self.scanned, *self.joined]


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
            reader = _ReadOnly(conn, statement_timeout_ms)
            try:
                plans = _inspect(conn, declared, report.problems)
                if not count_valid:
                    _settle_valid(plans, report)
                _count(reader, plans, sample, progress, report)
            finally:
                reader.close()
    except OperationalError as err:
        raise ServerUnavailable(f"lost the connection to {report.database} during the audit: "
                                f"{first_line(err)}") from err
    position = {id(rule): i for i, rule in enumerate(declared.rules)}
    report.findings.sort(key=lambda f: position.get(id(f.rule), len(position)))
    return report


class _ReadOnly:
    """A READ ONLY transaction that a failed statement can be retried after.

    The counting statements run without savepoints (a savepoint costs two
    round trips per statement); when one fails, the transaction is begun
    again and the culprit is looked for statement by statement.
    """

    def __init__(self, conn: Connection, timeout_ms: int | None) -> None:
        self.conn = conn
        self.timeout_ms = timeout_ms
        self.tx = conn.begin()
        self._prepare()

    def _prepare(self) -> None:
        raw.execute(self.conn, "SET TRANSACTION READ ONLY")
        if self.timeout_ms is not None:
            raw.execute(self.conn, f"SET LOCAL statement_timeout = {int(self.timeout_ms)}")

    def restart(self) -> None:
        self.tx.rollback()
        self.tx = self.conn.begin()
        self._prepare()

    def close(self) -> None:
        if self.tx.is_active:
            self.tx.rollback()


# --------------------------------------------------------------------------- states


def _inspect(conn: Connection, declared: DeclaredRules, problems: list[str]) -> list[_TablePlan]:
    """Every rule's state, from one catalog read and one parse of every predicate."""
    by_table: dict[TableName, list[Rule]] = {}
    for rule in declared.rules:
        by_table.setdefault(rule.table, []).append(rule)
    referents = [r.referent for r in declared.rules if isinstance(r, ForeignKeyRule)]
    infos = catalog.table_infos(conn, [*by_table, *referents])
    verdicts = _parse_predicates(conn, by_table, infos)
    twins = _check_twins(conn, by_table, infos)
    plans = []
    for table, rules in by_table.items():
        info = infos.get(table)
        if info is None:
            labels = ", ".join(r.label for r in rules)
            problems.append(f"{catalog.missing_table(table)}; not audited: {labels}")
            continue
        plan = _plan_for(info)
        for rule in rules:
            decided = _state(rule, info, infos, verdicts, twins)
            if isinstance(decided, str):
                problems.append(decided)
                continue
            bucket = plan.joined if isinstance(rule, ForeignKeyRule) else plan.scanned
            bucket.append(_Audited(rule, *decided))
        plans.append(plan)
    return plans


def _plan_for(info: TableInfo) -> _TablePlan:
    columns = info.primary_key
    if not columns:
        return _TablePlan(info.table, "t.ctid::text", ["ctid"], ["t.ctid"])
    order = [f"t.{quote(c)}" for c in columns]
    key = order[0] if len(order) == 1 else "(" + ", ".join(order) + ")::text"
    return _TablePlan(info.table, key, columns, order)


_Verdicts = dict[tuple[TableName, str, str], "rule_compare.CheckVerdict | PredicateError"]


def _parse_predicates(conn: Connection, by_table: dict[TableName, list[Rule]],
                      infos: dict[TableName, TableInfo | None]) -> _Verdicts:
    """Every CHECK (wanted vs live), NOT NULL helper and expectation, in ONE statement."""
    pairs: list[tuple[CheckRule, catalog.ConstraintState | None]] = []
    keys: list[tuple[TableName, str, str]] = []
    for table, rules in by_table.items():
        info = infos.get(table)
        if info is None:
            continue
        for rule in rules:
            if isinstance(rule, CheckRule):
                if rule.named:
                    pairs.append((rule, info.constraints.get(rule.name)))
                    keys.append((table, rule.name, rule.condition))
            elif isinstance(rule, ExpectRule):  # parsed only; its name may be any length
                pairs.append((CheckRule(f"expectation_{len(keys)}", table, rule.condition),
                              None))
                keys.append((table, rule.name, rule.condition))
            elif isinstance(rule, NotNullRule):
                for name in (rule.helper_name, rule.legacy_helper_name):
                    if name in info.constraints:
                        pairs.append((rule.as_check(name), info.constraints[name]))
                        keys.append((table, name, rule.condition))
    found = rule_compare.check_verdicts(conn, pairs, parse_unmatched=False)
    return dict(zip(keys, found, strict=True))


_Twins = dict[tuple[TableName, str, str], "list[str] | PredicateError"]


def _check_twins(conn: Connection, by_table: dict[TableName, list[Rule]],
                 infos: dict[TableName, TableInfo | None]) -> _Twins:
    """For CHECK rules the models leave unnamed, or whose name the table lacks: the live
    CHECKs with the same parsed predicate, whatever their names (one batch for all)."""
    items: list[tuple[TableName, str]] = []
    wanted: list[tuple[CheckRule, int]] = []
    lives: dict[TableName, list[tuple[str, int]]] = {}
    for table, rules in by_table.items():
        info = infos.get(table)
        checks = [c for c in info.constraints.values()
                  if c.contype == "c" and c.expression] if info is not None else []
        searched = [r for r in rules if isinstance(r, CheckRule)
                    and (not r.named or (info is not None and r.name not in info.constraints))]
        if not checks or not searched:
            continue
        for rule in searched:
            wanted.append((rule, len(items)))
            items.append((table, rule.condition))
        lives[table] = []
        for check in checks:
            lives[table].append((check.name, len(items)))
            items.append((table, check.expression or ""))
    forms = predicates.normalize(conn, items)
    found: _Twins = {}
    for rule, at in wanted:
        form = forms[at]
        if form.text is None:
            found[(rule.table, rule.name, rule.condition)] = rule_compare.predicate_error(rule,
                                                                                         form)
            continue
        names = [name for name, i in lives[rule.table] if forms[i].text == form.text]
        names.sort(key=lambda name: name != rule.name)  # the rule's own name first
        found[(rule.table, rule.name, rule.condition)] = names
    return found


def _state(rule: Rule, info: TableInfo, infos: dict[TableName, TableInfo | None],
           verdicts: _Verdicts, twins: _Twins) -> tuple[str, str] | str:
    """(state, detail), or the problem that keeps the rule from being audited."""
    if isinstance(rule, NotNullRule):
        return _not_null_state(rule, info, verdicts)
    if isinstance(rule, CheckRule):
        return _check_rule_state(rule, info, verdicts, twins)
    if isinstance(rule, ForeignKeyRule):
        return _foreign_key_state(rule, info, infos.get(rule.referent))
    verdict = verdicts[(rule.table, rule.name, rule.condition)]
    if isinstance(verdict, PredicateError):
        reason = str(verdict).partition(f"{rule.condition!r}: ")[2].partition("; ")[0]
        return (f"expectation {rule.name} on {rule.table}: PostgreSQL rejects the predicate "
                f"{rule.condition!r}: {reason}; fix the condition text")
    return "audit_only", ""


def _check_rule_state(rule: CheckRule, info: TableInfo, verdicts: _Verdicts,
                      twins: _Twins) -> tuple[str, str] | str:
    """Named: the constraint of that name. Unnamed: one with the same parsed predicate."""
    twin = twins.get((rule.table, rule.name, rule.condition), [])
    if isinstance(twin, PredicateError):
        return str(twin)
    if not rule.named:
        if not twin:
            return "absent", "unnamed in the models; no constraint with this definition"
        live = info.constraints[twin[0]]
        state = "valid" if live.validated else "not_valid"
        return state, f"unnamed in the models; matched by definition: {live.name}"
    verdict = verdicts.get((rule.table, rule.name, rule.condition))
    if isinstance(verdict, PredicateError):
        return str(verdict)
    if verdict is None or verdict.live is None:
        return "absent", (f"the database has the same constraint as {twin[0]}" if twin else "")
    return _check_state(verdict)


def _check_state(verdict: rule_compare.CheckVerdict) -> tuple[str, str]:
    live = verdict.live
    if live is None:
        return "absent", ""
    if not verdict.same:
        return "other_definition", f"database has: {live.definition}"
    return ("valid", "") if live.validated else ("not_valid", "")


def _not_null_state(rule: NotNullRule, info: TableInfo, verdicts: _Verdicts
                    ) -> tuple[str, str] | str:
    column = info.columns.get(rule.column)
    if column is None:
        return (f"rule {rule.label}: table {rule.table} has no column {rule.column!r}; "
                "not audited")
    if column.not_null:
        return "valid", ""
    if column.not_null_constraint is not None:
        return "not_valid", f"NOT NULL {column.not_null_constraint} NOT VALID"
    for name in (rule.helper_name, rule.legacy_helper_name):
        if name not in info.constraints:
            continue
        verdict = verdicts.get((rule.table, name, rule.condition))
        if isinstance(verdict, rule_compare.CheckVerdict) and verdict.same:
            assert verdict.live is not None
            if verdict.live.validated:
                return "valid", f"helper check {name} validated; SET NOT NULL still to run"
            return "not_valid", f"helper check {name} NOT VALID"
        return "other_definition", f"database has {name}: {info.constraints[name].definition}"
    return "absent", ""


def _foreign_key_state(rule: ForeignKeyRule, info: TableInfo, referent: TableInfo | None
                       ) -> tuple[str, str] | str:
    where = f"foreign key {rule.name} on {rule.table}"
    missing = [c for c in rule.columns if c not in info.columns]
    if missing:
        return f"{where}: table {rule.table} has no column {_listed(missing)}; not audited"
    if referent is None:
        return f"{where}: the referenced table {rule.referent} does not exist; not audited"
    missing = [c for c in rule.referent_columns if c not in referent.columns]
    if missing:
        return f"{where}: table {rule.referent} has no column {_listed(missing)}; not audited"
    if not rule.named:
        return _unnamed_foreign_key_state(rule, info, referent.oid)
    live = info.constraints.get(rule.name)
    if live is None:
        twin = _find_foreign_key(rule, info, referent.oid)
        return "absent", f"the database has the same constraint as {twin}" if twin else ""
    if live.foreign_key is None or not rule_compare.same_foreign_key_structure(
            live.foreign_key, rule, referent.oid):
        return "other_definition", f"database has: {live.definition}"
    return ("valid", "") if live.validated else ("not_valid", "")


def _unnamed_foreign_key_state(rule: ForeignKeyRule, info: TableInfo, referent: int
                               ) -> tuple[str, str]:
    """An FK the models leave unnamed: the live one with its structure, whatever its name."""
    name = _find_foreign_key(rule, info, referent)
    if name is not None:
        live = info.constraints[name]
        return (("valid" if live.validated else "not_valid"),
                f"unnamed in the models; matched by definition: {name}")
    loose = _find_foreign_key(rule, info, referent, loose=True)
    if loose is not None:
        return "other_definition", f"database has: {info.constraints[loose].definition}"
    return "absent", "unnamed in the models; no constraint with this definition"


def _find_foreign_key(rule: ForeignKeyRule, info: TableInfo, referent: int,
                      loose: bool = False) -> str | None:
    """The name of a live FK with the rule's structure (the rule's own name first)."""
    found = sorted((c.name for c in info.constraints.values() if c.foreign_key is not None
                    and rule_compare.same_foreign_key_structure(c.foreign_key, rule, referent,
                                                                loose)),
                   key=lambda name: name != rule.name)
    return found[0] if found else None


def _listed(columns: list[str]) -> str:
    return ", ".join(map(repr, columns))


# --------------------------------------------------------------------------- counting


def _settle_valid(plans: list[_TablePlan], report: AuditReport) -> None:
    """Report valid row-level rules as clean without scanning for them."""
    for plan in plans:
        for item in [i for i in plan.scanned if i.state == "valid"]:
            detail = "; ".join(filter(None, [item.detail, _GUARANTEED]))
            report.findings.append(Finding(item.rule, item.state, 0, [],
                                           list(plan.key_columns), detail))
            plan.scanned.remove(item)


def _count(reader: _ReadOnly, plans: list[_TablePlan], sample: int,
           progress: ProgressCallback | None, report: AuditReport) -> None:
    """Count every table in READ ONLY transactions; nothing in them can write."""
    for done, plan in enumerate(plans):
        if progress is not None:
            progress(Progress(f"counting {plan.table}", done, len(plans), unit="tables"))
        if done and done % _TABLES_PER_TRANSACTION == 0:
            reader.restart()  # release the tables' locks: thousands would fill the lock table
        if plan.items:
            _count_table(reader, plan, sample, report)
    if progress is not None and plans:
        progress(Progress(f"counting {plans[-1].table}", len(plans), len(plans),
                          unit="tables"))


def _count_table(reader: _ReadOnly, plan: _TablePlan, sample: int, report: AuditReport) -> None:
    """One statement for every rule of the table; if it fails, find the culprit rule."""
    items = plan.items
    try:
        row = raw.execute(reader.conn, _counts_sql(plan, items)).one()
    except DBAPIError as err:
        reader.restart()
        if len(items) == 1:
            report.problems.append(_rule_problem(plan, items[0], err, reader.timeout_ms))
            return
        if sqlstate(err) == _QUERY_CANCELED:
            report.problems.append(_count_problem(plan, items, err, reader.timeout_ms))
            return
        counted = [item for item in items if _count_alone(reader, plan, item, report)]
    else:
        for item, count in zip(items, row, strict=True):
            item.count = int(count)
        counted = items
    samples = _samples(reader, plan, [i for i in counted if i.count], sample, report)
    for item in counted:
        report.findings.append(Finding(item.rule, item.state, item.count,
                                       samples.get(id(item), []), list(plan.key_columns),
                                       item.detail))


def _count_alone(reader: _ReadOnly, plan: _TablePlan, item: _Audited,
                 report: AuditReport) -> bool:
    try:
        item.count = int(raw.execute(reader.conn, _counts_sql(plan, [item])).scalar_one())
    except DBAPIError as err:
        reader.restart()
        report.problems.append(_rule_problem(plan, item, err, reader.timeout_ms))
        return False
    return True


def _rule_problem(plan: _TablePlan, item: _Audited, err: DBAPIError,
                  timeout_ms: int | None) -> str:
    """A predicate PostgreSQL refuses to parse is said as such; anything else as a failure."""
    rule = item.rule
    code = sqlstate(err) or ""
    if code.startswith("42") and isinstance(rule, CheckRule | ExpectRule):
        what = "CHECK constraint" if isinstance(rule, CheckRule) else "expectation"
        hint = ("; if a pending revision adds that column, this rule can only be checked "
                "after it (use repair=True on its ensure_* operation), else fix the condition"
                if code == catalog.UNDEFINED_COLUMN and isinstance(rule, CheckRule)
                else "; fix the condition text")
        return (f"{what} {rule.name} on {rule.table}: PostgreSQL rejects the predicate "
                f"{rule.condition!r}: {first_line(err)}{hint}")
    return _count_problem(plan, [item], err, timeout_ms)


def _samples(reader: _ReadOnly, plan: _TablePlan, items: list[_Audited], sample: int,
             report: AuditReport) -> dict[int, list[Any]]:
    """The first ``sample`` keys of each rule that has violations, in one statement."""
    if not items or sample == 0:
        return {}
    arrays = ", ".join(f"ARRAY({_violating_sql(plan, i.rule, plan.key)} "
                       f"ORDER BY {', '.join(plan.order)} LIMIT {int(sample)})" for i in items)
    try:
        row = raw.execute(reader.conn, f"SELECT {arrays}").one()
    except DBAPIError as err:
        reader.restart()
        report.problems.append(_count_problem(plan, items, err, reader.timeout_ms, "sampling"))
        return {}
    return {id(item): list(keys or []) for item, keys in zip(items, row, strict=True)}


def _counts_sql(plan: _TablePlan, items: list[_Audited]) -> str:
    """ONE scan for all row-level rules, and one anti-join per foreign key, in one statement."""
    parts = []
    scanned = [i for i in items if not isinstance(i.rule, ForeignKeyRule)]
    if scanned:
        counts = ", ".join(f"count(*) FILTER (WHERE {i.rule.violation_sql('t')}) AS c{n}"
                           for n, i in enumerate(scanned))
        parts.append(f"(SELECT {counts} FROM {plan.table.sql} AS t) AS s")
    for n, item in enumerate(i for i in items if isinstance(i.rule, ForeignKeyRule)):
        parts.append(f"({_violating_sql(plan, item.rule, 'count(*) AS c')}) AS f{n}")
    return "SELECT * FROM " + " CROSS JOIN ".join(parts)


def _violating_sql(plan: _TablePlan, rule: Rule, select: str) -> str:
    """``SELECT <select>`` over the rows of the table that break ``rule``."""
    if not isinstance(rule, ForeignKeyRule) or (rule.match_code == "f"
                                                and len(rule.columns) > 1):
        # (MATCH FULL: partly NULL keys break it too, so its own predicate is used)
        return f"SELECT {select} FROM {plan.table.sql} AS t WHERE {rule.violation_sql('t')}"
    present = " AND ".join(f"t.{quote(c)} IS NOT NULL" for c in rule.columns)
    joined = " AND ".join(f"r.{quote(rc)} = t.{quote(c)}"
                          for c, rc in zip(rule.columns, rule.referent_columns, strict=True))
    return (f"SELECT {select} FROM {plan.table.sql} AS t LEFT JOIN {rule.referent.sql} AS r "
            f"ON {joined} WHERE {present} AND r.{quote(rule.referent_columns[0])} IS NULL")


# --------------------------------------------------------------------------- helpers


def _count_problem(plan: _TablePlan, items: list[_Audited], err: DBAPIError,
                   timeout_ms: int | None, doing: str = "counting") -> str:
    labels = ", ".join(i.rule.label for i in items)
    if sqlstate(err) == _QUERY_CANCELED:
        limit = f"the statement timeout ({timeout_ms} ms)" if timeout_ms else "a cancel request"
        return (f"table {plan.table}: {doing} {labels} was stopped by {limit}; "
                "raise --statement-timeout or audit when the database is quieter")
    return f"table {plan.table}: {doing} {labels} failed: {first_line(err)}"
