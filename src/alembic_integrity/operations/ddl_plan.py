"""Decide what an ``ensure_*`` operation must do, from the catalog.

A plan is a list of short transactions. Each is run (or, offline, printed)
on its own with a lock or statement timeout, so no step ever holds a strong
lock while it scans. An empty plan means the rule is already in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection

from ..errors import CatalogError
from ..pg import catalog
from ..pg.identifiers import TableName, check_length, quote
from ..pg.locks import (
    ACCESS_EXCLUSIVE,
    ROW_SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    LockNeed,
)
from ..rules import compare as rule_compare
from ..rules.kinds import (
    CheckRule,
    ForeignKeyRule,
    NotNullRule,
    Rule,
    drop_constraint_sql,
    validate_sql,
)


@dataclass(frozen=True)
class Step:
    """One transaction of its own."""

    purpose: str
    statements: tuple[str, ...]
    kind: str = "ddl"  # "ddl": short, under lock_timeout; "validate": the long scan
    rule: Rule | None = None  # for VALIDATE: whose violations to report on failure
    # For VALIDATE: the table and constraint it checks, so that the executor can run it
    # partition by partition when the table is partitioned (operations/partitions.py).
    validates: tuple[TableName, str] | None = None
    # Relations the step locks and how: looked at in pg_locks before each attempt.
    locks: tuple[LockNeed, ...] = ()


@dataclass
class Plan:
    action: str
    detail: str
    steps: list[Step] = field(default_factory=list)

    @property
    def noop(self) -> bool:
        return not self.steps


def add_locks(rule: CheckRule | ForeignKeyRule, replace: bool) -> tuple[LockNeed, ...]:
    """ADD CHECK and any DROP CONSTRAINT: ACCESS EXCLUSIVE on the table. ADD FOREIGN KEY
    alone: SHARE ROW EXCLUSIVE on both tables (readers may go on); dropping an old key
    also takes ACCESS EXCLUSIVE on its referent."""
    if not isinstance(rule, ForeignKeyRule):
        return (LockNeed(rule.table, ACCESS_EXCLUSIVE),)
    if not replace:
        return (LockNeed(rule.table, SHARE_ROW_EXCLUSIVE),
                LockNeed(rule.referent, SHARE_ROW_EXCLUSIVE))
    return (LockNeed(rule.table, ACCESS_EXCLUSIVE), LockNeed(rule.referent, ACCESS_EXCLUSIVE))


def _add(rule: CheckRule | ForeignKeyRule, replace: bool) -> Step:
    """DROP IF EXISTS, then ADD. A foreign key the catalog just found absent is added
    without the DROP, which would take ACCESS EXCLUSIVE and so wait for every reader."""
    purpose = f"replace {rule.label} (NOT VALID)" if replace else f"add {rule.label} (NOT VALID)"
    fk_add = isinstance(rule, ForeignKeyRule) and not replace
    drop = () if fk_add else (drop_constraint_sql(rule.table, rule.name),)
    return Step(purpose, (*drop, rule.add_sql()), rule=rule, locks=add_locks(rule, replace))


def validate_locks(rule: Rule) -> tuple[LockNeed, ...]:
    """VALIDATE: SHARE UPDATE EXCLUSIVE on the table (writers go on), ROW SHARE on a referent."""
    locks: tuple[LockNeed, ...] = (LockNeed(rule.table, SHARE_UPDATE_EXCLUSIVE),)
    if isinstance(rule, ForeignKeyRule):
        locks += (LockNeed(rule.referent, ROW_SHARE),)
    return locks


def _validate(rule: CheckRule | ForeignKeyRule, shown: Rule | None = None) -> Step:
    return Step(f"validate {rule.label}", (validate_sql(rule.table, rule.name),),
                kind="validate", rule=shown or rule, validates=(rule.table, rule.name),
                locks=validate_locks(rule))


def _add_then_validate(rule: CheckRule | ForeignKeyRule, action: str, detail: str) -> Plan:
    return Plan(action, detail, [_add(rule, action == "replace"), _validate(rule)])


def plan_check(conn: Connection | None, rule: CheckRule) -> Plan:
    if conn is None:
        return _add_then_validate(rule, "replace", "offline: drop if exists, add, validate")
    doing = f"ensure_check_constraint {rule.name}"
    oid = catalog.require_table(conn, rule.table, doing)
    live = catalog.constraint(conn, oid, rule.name)
    if live is not None and live.contype != "c":
        raise rule_compare.other_kind_error(doing, rule.name, rule.table, "CHECK", live)
    verdict = rule_compare.check_verdict(conn, rule, live)  # a bad predicate fails here
    if live is None:
        return _add_then_validate(rule, "add", "absent")
    if verdict.same:
        if live.validated:
            return Plan("none", "present, same definition, valid")
        return Plan("validate", "present, same definition, NOT VALID", [_validate(rule)])
    other = f"present with another definition: {live.definition}"
    return _add_then_validate(rule, "replace", other)


def plan_foreign_key(conn: Connection | None, rule: ForeignKeyRule) -> Plan:
    if conn is None:
        return _add_then_validate(rule, "replace", "offline: drop if exists, add, validate")
    doing = f"ensure_foreign_key {rule.name}"
    oid = catalog.require_table(conn, rule.table, doing)
    catalog.require_table(conn, rule.referent, doing)
    live = catalog.constraint(conn, oid, rule.name)
    if live is None:
        return _add_then_validate(rule, "add", "absent")
    if live.contype != "f":
        raise rule_compare.other_kind_error(doing, rule.name, rule.table, "FOREIGN KEY", live)
    if rule_compare.same_foreign_key(conn, live, rule):
        if live.validated:
            return Plan("none", "present, same definition, valid")
        return Plan("validate", "present, same definition, NOT VALID", [_validate(rule)])
    other = f"present with another definition: {live.definition}"
    return _add_then_validate(rule, "replace", other)


def _set_not_null(rule: NotNullRule, helper: str) -> Step:
    return Step(
        f"set {rule.label}, drop helper check {helper}",
        (
            f"ALTER TABLE {rule.table.sql} ALTER COLUMN {quote(rule.column)} SET NOT NULL",
            drop_constraint_sql(rule.table, helper),
        ),
        locks=(LockNeed(rule.table, ACCESS_EXCLUSIVE),),
    )


def _helper_path(rule: NotNullRule, helper: CheckRule) -> list[Step]:
    return [_add(helper, False), _validate(helper, rule), _set_not_null(rule, helper.name)]


def plan_not_null(conn: Connection | None, rule: NotNullRule) -> Plan:
    """NOT NULL without a long lock: natively NOT VALID on 18+, else via a helper CHECK.

    Before PostgreSQL 18 a validated helper ``CHECK (col IS NOT NULL)`` lets
    ``SET NOT NULL`` skip its scan (PostgreSQL 12+); from 18 the NOT NULL
    constraint itself is added ``NOT VALID`` and validated, and no helper is
    made. A run that stopped half way resumes from what it left (a NOT VALID
    NOT NULL, or a helper under its current or its earlier name).
    """
    if conn is None:
        return Plan("set-not-null", "offline: helper check, validate, set not null",
                    _helper_path(rule, rule.as_check()))
    doing = f"ensure_not_null {rule.label}"
    oid = catalog.require_table(conn, rule.table, doing)
    column = catalog.column(conn, oid, rule.column)
    if column is None:
        raise CatalogError(
            f"ensure_not_null: table {rule.table} has no column {rule.column!r}; "
            "check the column name"
        )
    if column.not_null:
        return Plan("none", "column is already NOT NULL")
    if column.not_null_constraint is not None:  # 18+: a NOT VALID NOT NULL is there
        step = _validate_not_null(rule, column.not_null_constraint)
        return Plan("validate", f"NOT NULL {column.not_null_constraint} NOT VALID", [step])
    resumed = _resumable_helper(conn, oid, rule)
    if resumed is not None:
        return resumed
    if catalog.features(conn).native_not_null:
        return _native_not_null(conn, oid, rule, doing)
    taken = catalog.constraint(conn, oid, rule.helper_name)
    if taken is not None and taken.contype != "c":
        raise rule_compare.other_kind_error(doing, rule.helper_name, rule.table,
                                            "CHECK (helper of NOT NULL)", taken)
    return Plan("set-not-null", "nullable", _helper_path(rule, rule.as_check()))


def _resumable_helper(conn: Connection, oid: int, rule: NotNullRule) -> Plan | None:
    """The plan that finishes from a helper CHECK an earlier run left, if there is one."""
    for name in (rule.helper_name, rule.legacy_helper_name):
        live = catalog.constraint(conn, oid, name)
        if live is None or live.contype != "c":
            continue
        helper = rule.as_check(name)
        if not rule_compare.check_verdict(conn, helper, live).same:
            continue
        if live.validated:
            return Plan("set-not-null", f"helper check {name} valid",
                        [_set_not_null(rule, name)])
        return Plan("set-not-null", f"helper check {name} NOT VALID",
                    _helper_path(rule, helper)[1:])
    return None


def _native_not_null(conn: Connection, oid: int, rule: NotNullRule, doing: str) -> Plan:
    taken = catalog.constraint(conn, oid, rule.name)
    if taken is not None:
        raise rule_compare.other_kind_error(doing, rule.name, rule.table, "NOT NULL", taken)
    steps = [
        Step(f"add {rule.label} (NOT VALID)", (rule.add_native_sql(),), rule=rule,
             locks=(LockNeed(rule.table, ACCESS_EXCLUSIVE),)),
        _validate_not_null(rule, rule.name),
    ]
    return Plan("set-not-null", "nullable (native NOT NULL NOT VALID)", steps)


def _validate_not_null(rule: NotNullRule, name: str) -> Step:
    """PostgreSQL 18+: VALIDATE the column's own NOT NULL constraint."""
    return Step(f"validate {rule.label}", (validate_sql(rule.table, name),), kind="validate",
                rule=rule, validates=(rule.table, name),
                locks=(LockNeed(rule.table, SHARE_UPDATE_EXCLUSIVE),))


def plan_drop(conn: Connection | None, table: TableName, name: str) -> Plan:
    locks: tuple[LockNeed, ...] = (LockNeed(table, ACCESS_EXCLUSIVE),)
    if conn is None:
        return Plan("drop", "offline: drop if exists", [_drop(table, name, locks)])
    oid = catalog.table_oid(conn, table)
    live = catalog.constraint(conn, oid, name) if oid is not None else None
    if live is None:
        return Plan("none", "absent")
    if live.foreign_key is not None:  # dropping a foreign key also locks its referent
        locks += (LockNeed(live.foreign_key.referent_oid, ACCESS_EXCLUSIVE),)
    return Plan("drop", f"present: {live.definition}", [_drop(table, name, locks)])


def _drop(table: TableName, name: str, locks: tuple[LockNeed, ...]) -> Step:
    return Step(f"drop {name}", (drop_constraint_sql(table, name),), locks=locks)


def plan_rename(conn: Connection | None, table: TableName, old: str, new: str) -> Plan:
    """Rename ``old`` to ``new``: nothing when only ``new`` exists (already done)."""
    check_length(new, "constraint name")
    rename = f"ALTER TABLE {table.sql} RENAME CONSTRAINT {quote(old)} TO {quote(new)}"
    locks = (LockNeed(table, ACCESS_EXCLUSIVE),)
    step = Step(f"rename constraint {old} to {new} on {table}", (rename,), locks=locks)
    if conn is None:
        return Plan("rename", "offline: rename if still named old",
                    [Step(step.purpose, (_offline_rename(table, old, new, rename),),
                          locks=locks)])
    oid = catalog.require_table(conn, table, f"ensure_constraint_renamed {old} -> {new}")
    has_old = catalog.constraint(conn, oid, old) is not None
    has_new = catalog.constraint(conn, oid, new) is not None
    if has_new and not has_old:
        return Plan("none", f"already named {new}")
    if has_old and not has_new:
        return Plan("rename", f"named {old}", [step])
    if has_old:
        raise CatalogError(
            f"ensure_constraint_renamed: table {table} has both {old} and {new}; drop the one "
            "that should not be there (ensure_constraint_dropped), then run the upgrade again")
    raise CatalogError(
        f"ensure_constraint_renamed: table {table} has neither {old} nor {new}; "
        "nothing to rename, check the names")


def _offline_rename(table: TableName, old: str, new: str, rename: str) -> str:
    """A script has no catalog to read: the server decides, so running it twice is safe."""
    def named(name: str) -> str:
        return (f"EXISTS (SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = "
                f"to_regclass({_text(table.sql)}) AND conname = {_text(name)})")

    return (f"DO $$BEGIN IF {named(old)} AND NOT {named(new)} THEN {rename}; "
            "END IF; END$$")


def _text(value: str) -> str:
    """A SQL string literal (identifiers only: no backslash escapes are involved)."""
    return "'" + value.replace("'", "''") + "'"


def plan_nullable(conn: Connection | None, table: TableName, column: str) -> Plan:
    step = Step(f"drop NOT NULL on {table}.{column}",
                (f"ALTER TABLE {table.sql} ALTER COLUMN {quote(column)} DROP NOT NULL",),
                locks=(LockNeed(table, ACCESS_EXCLUSIVE),))
    if conn is None:
        return Plan("drop-not-null", "offline", [step])
    oid = catalog.table_oid(conn, table)
    info = catalog.column(conn, oid, column) if oid is not None else None
    if info is None or not (info.not_null or info.not_null_constraint):
        return Plan("none", "already nullable (or absent)")
    return Plan("drop-not-null", "NOT NULL", [step])
