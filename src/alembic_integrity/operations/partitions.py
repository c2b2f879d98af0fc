"""Partitioned tables: VALIDATE one partition at a time, and foreign keys before PostgreSQL 18.

``VALIDATE CONSTRAINT`` on a partitioned table checks every partition in one
transaction: a bad row in the last partition throws away the work done on all
the others, and the locks (``SHARE UPDATE EXCLUSIVE`` on every partition) are
held until the whole tree is read. So a VALIDATE step on a partitioned table
runs as one short transaction per leaf partition still ``NOT VALID``, then the
parent's own VALIDATE, which PostgreSQL completes without reading a row once
every partition is valid (it skips validated children; checked on 15, 16 and
18 by tests/test_partitions.py). A failure or an interruption keeps what was
validated: the re-run starts at the partition that stopped it.

PostgreSQL before 18 refuses ``ADD FOREIGN KEY ... NOT VALID`` on a
partitioned table. There the key is added ``NOT VALID`` on each leaf partition
(one short transaction for all), validated leaf by leaf, and then added to the
parent *without* ``NOT VALID``: PostgreSQL adopts each partition's matching,
validated key as its child (``conparentid`` set, same OID) instead of checking
the rows again, so that last step is as short as the first.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from sqlalchemy import Connection

from ..errors import ValidationFailed
from ..pg import catalog
from ..pg.identifiers import TableName
from ..pg.locks import LockNeed
from ..rules import compare as rule_compare
from ..rules.kinds import ForeignKeyRule, Rule, drop_constraint_sql, validate_sql
from .ddl_plan import Plan, Step, add_locks, validate_locks

log = logging.getLogger("alembic_integrity")


@dataclass(frozen=True)
class PartitionStep(Step):
    """The VALIDATE of one leaf partition: where it stands among the table's leaves."""

    position: int = 0
    total: int = 0


def split_validate(conn: Connection, step: Step) -> list[Step]:
    """``step`` as one VALIDATE per leaf partition still NOT VALID, then the parent's.

    Read from the catalog when the step is about to run (not when the plan is
    made), so that a constraint just added is seen on every partition, and so
    that partitions already validated by an earlier, interrupted run are skipped.
    A table that is not partitioned gives ``[step]``.
    """
    if step.kind != "validate" or step.validates is None:
        return [step]
    table, name = step.validates
    oid = catalog.table_oid(conn, table)
    if oid is None or not catalog.is_partitioned(conn, oid):
        return [step]
    leaves = catalog.leaf_constraints(conn, oid, name)
    steps: list[Step] = []
    for position, leaf in enumerate(leaves, 1):
        if leaf.constraint is None or leaf.constraint.validated:
            continue
        steps.append(PartitionStep(
            f"validate {name} on partition {position}/{len(leaves)} {leaf.table}",
            (validate_sql(leaf.table, leaf.constraint.name),),
            kind="validate", rule=_scoped(step.rule, leaf), position=position,
            total=len(leaves), locks=_on_leaf(step.locks, table, leaf.table)))
    log.info("  %s: %d partition(s), %d already valid, %d to check one at a time",
             step.purpose, len(leaves), len(leaves) - len(steps), len(steps))
    parent = catalog.constraint(conn, oid, name)
    if parent is not None and not parent.validated:
        steps.append(dataclasses.replace(
            step, purpose=f"{step.purpose} on {table} (every partition valid: no scan)"))
    return steps


def _on_leaf(locks: tuple[LockNeed, ...], table: TableName, leaf: TableName
             ) -> tuple[LockNeed, ...]:
    """The parent step's lock needs, with the partition in place of the parent table."""
    return tuple(LockNeed(leaf, need.mode) if need.relation == table else need
                 for need in locks)


def _scoped(rule: Rule | None, leaf: catalog.LeafConstraint) -> Rule | None:
    """The rule on one partition, so that a failure counts and shows that partition's rows."""
    if rule is None or rule.kind == "expectation":
        return rule
    return dataclasses.replace(rule, table=leaf.table)


def resumable(err: ValidationFailed, step: PartitionStep) -> ValidationFailed:
    """``err`` saying where the partition-by-partition VALIDATE stopped and resumes."""
    before = step.position - 1
    return ValidationFailed(
        f"{err} (partition {step.position} of {step.total}; the {before} before it are "
        "validated and stay so: the re-run starts at this one)",
        constraint=err.constraint, table=err.table, count=err.count, sample=err.sample,
    )


# --- foreign keys before PostgreSQL 18 ----------------------------------------------------


def plan_foreign_key(conn: Connection, rule: ForeignKeyRule) -> Plan | None:
    """The plan for a foreign key on a partitioned table before 18; ``None`` otherwise."""
    oid = catalog.table_oid(conn, rule.table)
    if (oid is None or not catalog.is_partitioned(conn, oid)
            or catalog.fk_not_valid_on_partitioned(conn)):
        return None
    catalog.require_table(conn, rule.referent, f"ensure_foreign_key {rule.name}")
    live = catalog.constraint(conn, oid, rule.name)
    same = live is not None and rule_compare.same_foreign_key(conn, live, rule)
    if live is not None and same:  # valid: nothing to do; NOT VALID: only 18 can make that
        return Plan("none", "present, same definition, valid") if live.validated else None
    leaves = catalog.leaf_constraints(conn, oid, rule.name)
    # A parent's other definition is dropped with its copies on the partitions.
    adds = [drop_constraint_sql(rule.table, rule.name)] if live is not None and not same else []
    kept = 0
    for leaf in leaves:
        if _own_same_key(conn, leaf, rule):
            kept += 1
            continue
        on_leaf = dataclasses.replace(rule, table=leaf.table)
        if leaf.constraint is not None and not leaf.inherited:
            adds.append(drop_constraint_sql(leaf.table, rule.name))
        adds.append(on_leaf.add_sql())
    steps = []
    if adds:
        replaces = len(adds) > len(leaves) - kept  # some leaves drop an older key first
        steps.append(Step(f"add {rule.label} (NOT VALID) on {len(leaves) - kept} partition(s)",
                          tuple(adds), rule=rule, locks=add_locks(rule, replaces)))
    steps.append(Step(f"validate {rule.label}", (), kind="validate", rule=rule,
                      validates=(rule.table, rule.name), locks=validate_locks(rule)))
    steps.append(Step(
        f"add {rule.label} on {rule.table}: adopts the partitions' validated keys, no scan",
        (rule.add_sql().removesuffix(" NOT VALID"),), locks=add_locks(rule, False)))
    action = "add" if live is None else "replace"
    detail = (f"partitioned table, PostgreSQL before 18: NOT VALID then VALIDATE on each of "
              f"{len(leaves)} partition(s) ({kept} already have it), then on the parent")
    return Plan(action, detail, steps)


def _own_same_key(conn: Connection, leaf: catalog.LeafConstraint, rule: ForeignKeyRule) -> bool:
    """The partition already has this key of its own (left by an earlier, interrupted run)."""
    state = leaf.constraint
    return (state is not None and not leaf.inherited
            and rule_compare.same_foreign_key(conn, state,
                                              dataclasses.replace(rule, table=leaf.table)))
