"""Which rules a run repairs: those selected, whose tables exist and whose SQL runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import ConfigurationError, PredicateError, first_line, sqlstate
from ..pg import raw
from ..pg.locks import is_lock_error, with_lock_retries
from ..rules.kinds import ForeignKeyRule, Rule
from ..settings import Settings
from .log import transaction
from .plans import PolicyPlan
from .result import RuleOutcome
from .tables import Tables, Target


def select_targets(rules: Sequence[Rule], tables: Tables, names: Sequence[str] | None
                   ) -> tuple[list[Target], list[RuleOutcome]]:
    """The selected rules resolved against the catalog, and those that cannot be (no table)."""
    targets: list[Target] = []
    skipped: list[RuleOutcome] = []
    wanted = set(names or ())
    seen: set[str] = set()
    for rule in rules:
        table = tables.find(rule.table)
        units = [Target(rule, unit, tables) for unit in tables.units(table)] if table else []
        aliases = {rule.name, rule.label} | {target.rule_id for target in units}
        if wanted and not wanted & aliases:
            continue
        seen |= aliases
        if table is None:
            skipped.append(RuleOutcome(rule.label, rule.kind, str(rule.table),
                                       skipped=f"table {rule.table} does not exist"))
        elif isinstance(rule, ForeignKeyRule) and tables.find(rule.referent) is None:
            skipped += [RuleOutcome(target.rule_id, rule.kind, target.table.label,
                                    skipped=f"referenced table {rule.referent} does not exist")
                        for target in units]
        else:
            targets += units
    if wanted - seen:
        known = ", ".join(sorted(r.label for r in rules)) or "none"
        raise ConfigurationError(f"--rule {', '.join(sorted(wanted - seen))}: no such rule; "
                                 f"declared rules: {known}")
    return targets, skipped


def probe(conn: Connection, targets: Sequence[Target]
          ) -> tuple[list[Target], list[RuleOutcome]]:
    """Skip, with the reason, rules whose SQL the database cannot run yet.

    Typically a CHECK on a column that a pending revision adds: its rows can
    only be repaired during that migration (``repair=True`` on its operation).
    """
    usable: list[Target] = []
    skipped: list[RuleOutcome] = []
    for target in targets:
        try:
            raw.execute(conn, f"EXPLAIN SELECT 1 FROM {target.table.scan} AS t "
                              f"WHERE {target.violation}")
        except DBAPIError as err:
            hint = ("; if a pending revision adds it, give that revision's ensure_* "
                    "operation repair=True" if sqlstate(err) == "42703" else "")
            skipped.append(RuleOutcome(target.rule_id, target.rule.kind, target.table.label,
                                       skipped=f"{first_line(err)}{hint}"))
        else:
            usable.append(target)
    return usable, skipped


def validate(conn: Connection, targets: Sequence[Target], settings: Settings) -> None:
    """Have PostgreSQL parse and plan every policy's SQL before anything is written.

    Each plan's statements (its classification, and for an update its SET list)
    go through EXPLAIN, which parses, binds the values and plans without
    running. One rule the server rejects stops the whole run with one line:
    nothing is written, no repair record is started. Planning an UPDATE locks
    its table as writing would, so this looks at ``pg_locks`` and waits under
    ``lock_timeout`` exactly as a batch does.
    """
    for target in targets:
        for plan in target.plans():
            _explain(conn, target, plan, settings)


def _explain(conn: Connection, target: Target, plan: PolicyPlan, settings: Settings) -> None:
    doing = f"checking {plan.description}"

    def explain(lock_timeout_ms: int) -> None:
        with transaction(conn):
            raw.execute(conn, f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            for statement in plan.validation_sql():
                query(conn, target, f"EXPLAIN {statement}", doing)

    with_lock_retries(explain, settings, f"repair {target.rule_id}: {doing}", conn=conn,
                      needs=plan.locks, hint="nothing was written; run again when it is done")


def has_violations(conn: Connection, target: Target) -> bool:
    return bool(query(conn, target, f"SELECT EXISTS (SELECT 1 FROM {target.table.scan} AS t "
                                    f"WHERE {target.violation})").scalar())


def count_violations(conn: Connection, target: Target) -> int:
    """Violating rows now: the "to go" of a progress bar (counted only when one is shown)."""
    return int(query(conn, target, f"SELECT count(*) FROM {target.table.scan} AS t "
                                   f"WHERE {target.violation}").scalar_one())


def query(conn: Connection, target: Target, sql: str, doing: str = "finding violating rows"
          ) -> Any:
    """Run a read; a predicate PostgreSQL rejects becomes one line naming the rule."""
    try:
        return raw.execute(conn, sql, target.params)
    except DBAPIError as err:
        if is_lock_error(err):
            raise  # a lock wait, retried by the caller: not the rule's fault
        raise PredicateError(
            f"rule {target.rule_id}: {doing}: PostgreSQL rejects the rule's SQL or a policy's "
            f"where/match/expression: {first_line(err)}; fix the declaration"
        ) from err
