"""Repair the rows that break declared rules, as each rule's policies say; log and restore.
Imports ``rules`` and ``pg``; nothing else in the library.

For every rule with violating rows, its policies are tried in order. A policy
takes the violating rows its ``where`` matches and no earlier policy's
``where`` matched: the partition is decided by the ``where`` clauses alone,
so a dry run and the real run agree, and a row a policy refuses (a Delete of a
referenced row, a Relink that is not one-to-one) stays with that policy and is
left for a person with the reason; it never falls through to a later, perhaps
more destructive, policy. Rows no policy takes are left for a person too.

A dry run (the default) reads one snapshot in a READ ONLY transaction and
writes nothing, not even the log. Before anything else, every plan's SQL is
checked by EXPLAIN: one rule PostgreSQL rejects stops the run, nothing written.

``apply=True`` repairs policy by policy. A policy first lists the rows of its
scope, numbered in primary-key order, in a temporary WORKLIST (one sequential
scan). Then it works in batches of ``batch_size`` of those rows, each batch one
short transaction under ``lock_timeout`` and one statement of data-modifying
CTEs::

    WITH ai_next   AS (the next worklist rows),
         ai_picked AS (SELECT ... FROM tbl t WHERE t.ctid = ANY(<ai_next's ctids>)
                       AND <still in scope>),
         ai_gone   AS (DELETE/UPDATE ... the picked row versions RETURNING ...),
         ai_images AS (INSERT INTO <image table> SELECT ... FROM ai_gone),
         logged    AS (INSERT INTO <log> <the batch: rows, cursor reached>)
    SELECT <counts>

so no row is changed without its typed before-image (see ``log``), and rows
never travel to the client. The pick takes no ``FOR UPDATE`` lock: the
UPDATE/DELETE matches the exact row version picked (by ``ctid``), and a row
another session changed in between has a new ``ctid`` after PostgreSQL's
re-check (EvalPlanQual), so it is skipped rather than overwritten (and the
summary counts again what still violates). Row locks are taken by the
UPDATE/DELETE itself and last one short batch. (A cascading Delete does lock
its picked rows first.)

A crash between batches loses nothing; running the same repair again (same
rules) resumes the repair record still ``running``: each policy lists its rows
again past the last key its batches logged.

The package, in the order of a run:

* ``targets`` selects the rules, resolves them against the catalog (``tables``:
  tables, inheritance members, the foreign keys onto them, each rule's
  partition SQL) and validates every plan's SQL;
* ``plans`` turns each policy into SQL, one module per policy family
  (``base``, ``update``, ``delete``, ``quarantine``, ``relink``, ``manual``);
* ``dryrun`` counts what each plan would do, or ``apply`` runs the plans'
  batches (``batch``: what the batches share) and ``summary`` reads back what
  the log says was done;
* ``result`` holds the outcome and renders it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine

from ..errors import ConfigurationError
from ..pg.progress import Progress, ProgressCallback
from ..rules.kinds import ForeignKeyRule, Rule
from ..rules.metadata import DeclaredRules
from ..settings import Settings
from .apply import apply_all
from .dryrun import dry_run
from .log import DEFAULT_LOG_TABLE, LogTables, autocommit_connection
from .result import PolicyOutcome, RepairResult, RuleOutcome
from .tables import Tables
from .targets import probe, select_targets, validate

__all__ = ["PolicyOutcome", "Progress", "ProgressCallback", "RepairResult", "RuleOutcome",
           "repair", "repair_rule"]


def repair(engine: Engine | Connection, declared: DeclaredRules, *, apply: bool = False,
           batch_size: int = 10_000, log_table: str = DEFAULT_LOG_TABLE,
           rules: Sequence[str] | None = None, progress: ProgressCallback | None = None,
           settings: Settings | None = None) -> RepairResult:
    """Repair (or, by default, plan the repair of) the rows that break ``declared`` rules.

    ``rules`` keeps only the rules named: constraint name, label (``table.column
    NOT NULL``) or the id the report shows. See the package docstring for what
    is written and when.
    """
    fks = [r for r in declared.rules if isinstance(r, ForeignKeyRule)]
    return _repair(engine, declared.rules, fks, apply=apply, batch_size=batch_size,
                   log_table=log_table, progress=progress, settings=settings, names=rules)


def repair_rule(bind: Engine | Connection, rule: Rule, declared: DeclaredRules | None = None, *,
                apply: bool = True, batch_size: int = 10_000,
                log_table: str = DEFAULT_LOG_TABLE, progress: ProgressCallback | None = None,
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
            apply: bool, batch_size: int, log_table: str, progress: ProgressCallback | None,
            settings: Settings | None, names: Sequence[str] | None) -> RepairResult:
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size {batch_size}: must be at least 1")
    log = LogTables.parse(log_table)
    result = RepairResult(applied=apply, log_table=log.label)
    with autocommit_connection(bind) as conn:
        targets, skipped = select_targets(rules, Tables(conn, fks), names)
        targets, unreadable = probe(conn, targets)
        skipped += unreadable
        for target in targets:
            for plan in target.plans():
                plan.check()
        settings = settings or Settings()
        validate(conn, targets, settings)
        if not apply:
            dry_run(conn, targets, result)
        else:
            apply_all(conn, targets, log, result, batch_size=batch_size,
                      settings=settings, progress=progress)
        result.rules += skipped
    return result


