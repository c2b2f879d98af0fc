"""Drift: the CHECK, NOT NULL and FOREIGN KEY rules the models declare against the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CheckConstraint, Connection, MetaData

from ..compat import is_type_bound
from ..errors import IntegrityError
from ..pg import catalog
from ..pg.identifiers import TableName
from ..rules import compare as rule_compare
from ..rules.kinds import CheckRule, ForeignKeyRule, NotNullRule, Rule
from ..rules.metadata import (
    DeclaredRules,
    check_condition,
    constraint_name,
    rules_from_metadata,
)


@dataclass
class Drift:
    """Models against database: ``missing`` fails; ``extra`` fails only when strict."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)


def drift(conn: Connection, metadata: MetaData) -> Drift:
    """Compare the rules ``metadata`` declares with the database (read only, rolled back).

    Each declared CHECK or FOREIGN KEY claims its live constraint: by name, or,
    when the models leave it unnamed, by definition. A claimed constraint is
    never "extra", whatever PostgreSQL named it (``item_owner_id_fkey``).
    """
    declared = rules_from_metadata(metadata)
    result = Drift(unchecked=[f"not checked: {p}" for p in declared.problems])
    claimed: set[tuple[TableName, str]] = set()
    with conn.begin() as tx:
        for table in declared.tables:
            _table_drift(conn, table, declared, result, claimed)
        for model_table in metadata.sorted_tables:
            _extra_rules(conn, model_table, declared, result, claimed)
        tx.rollback()
    return result


def _table_drift(conn: Connection, table: TableName, declared: DeclaredRules,
                 result: Drift, claimed: set[tuple[TableName, str]]) -> None:
    oid = catalog.table_oid(conn, table)
    if oid is None:
        result.missing.append(f"table {table} does not exist (the models declare rules on it)")
        return
    for rule in declared.for_table(table):
        try:
            problem = _rule_drift(conn, oid, rule, claimed)
        except IntegrityError as err:
            problem = str(err)
        if problem:
            result.missing.append(problem)


def _rule_drift(conn: Connection, oid: int, rule: Rule,
                claimed: set[tuple[TableName, str]]) -> str | None:
    if isinstance(rule, NotNullRule):
        return _not_null_drift(conn, oid, rule)
    if isinstance(rule, CheckRule):
        return _check_drift(conn, oid, rule, claimed)
    if isinstance(rule, ForeignKeyRule):
        return _foreign_key_drift(conn, oid, rule, claimed)
    return None  # expectations are audit-only, never constraints


def _not_null_drift(conn: Connection, oid: int, rule: NotNullRule) -> str | None:
    column = catalog.column(conn, oid, rule.column)
    where = f"{rule.table}.{rule.column}"
    if column is None:
        return f"{where}: the column does not exist"
    if column.not_null:
        return None
    if column.not_null_constraint is not None:
        return (f"{where}: NOT NULL {column.not_null_constraint} is NOT VALID in the database "
                "(never validated)")
    return f"{where}: the models declare NOT NULL, the database allows NULL"


def _where(rule: CheckRule | ForeignKeyRule) -> str:
    kind = "CHECK" if isinstance(rule, CheckRule) else "FOREIGN KEY"
    if rule.named:
        return f"{kind} {rule.name} on {rule.table}"
    return f"{kind} (unnamed in the models) on {rule.table}"


def _claim(rule: CheckRule | ForeignKeyRule, live: catalog.ConstraintState,
           claimed: set[tuple[TableName, str]]) -> None:
    claimed.add((rule.table, live.name))


def _renamed(conn: Connection, oid: int, rule: CheckRule | ForeignKeyRule,
             claimed: set[tuple[TableName, str]]) -> str | None:
    """A named rule missing by name whose exact twin lives under another name."""
    taken = frozenset(name for table, name in claimed if table == rule.table)
    if isinstance(rule, CheckRule):
        twin = rule_compare.find_check(conn, oid, rule, taken)
    else:
        twin = rule_compare.find_foreign_key(conn, oid, rule, taken=taken)
    if twin is None:
        return None
    _claim(rule, twin, claimed)
    return (f"{_where(rule)}: the database has the same constraint named {twin.name}; "
            f"rename it (op.ensure_constraint_renamed({twin.name!r}, {rule.name!r}, ...))")


def _check_drift(conn: Connection, oid: int, rule: CheckRule,
                 claimed: set[tuple[TableName, str]]) -> str | None:
    live = rule_compare.live_constraint(conn, oid, rule)
    verdict = rule_compare.check_verdict(conn, rule, live)
    wanted = f"CHECK ({verdict.wanted})"
    where = _where(rule)
    if live is None:
        renamed = _renamed(conn, oid, rule, claimed) if rule.named else None
        return renamed or f"{where}: missing in the database (models: {wanted})"
    _claim(rule, live, claimed)
    if not verdict.same:
        return f"{where} differs: models {wanted}, database {live.definition}"
    return None if live.validated else f"{where}: NOT VALID in the database (never validated)"


def _foreign_key_drift(conn: Connection, oid: int, rule: ForeignKeyRule,
                       claimed: set[tuple[TableName, str]]) -> str | None:
    live = rule_compare.live_constraint(conn, oid, rule)
    where = _where(rule)
    wanted = rule.definition_sql()
    if catalog.table_oid(conn, rule.referent) is None:
        return f"{where}: the referenced table {rule.referent} does not exist"
    if live is None:
        renamed = _renamed(conn, oid, rule, claimed) if rule.named else None
        return renamed or f"{where}: missing in the database (models: {wanted})"
    _claim(rule, live, claimed)
    if not rule_compare.same_foreign_key(conn, live, rule):
        return f"{where} differs: models {wanted}, database {live.definition}"
    return None if live.validated else f"{where}: NOT VALID in the database (never validated)"


def _extra_rules(conn: Connection, table: Any, declared: DeclaredRules, result: Drift,
                 claimed: set[tuple[TableName, str]]) -> None:
    """CHECKs, FOREIGN KEYs and NOT NULLs the database has on a model table, the models not."""
    name = TableName(table.name, table.schema)
    oid = catalog.table_oid(conn, name)
    if oid is None:
        return
    known = {constraint_name(c) for c in table.constraints}
    known |= {getattr(r, "name", None) for r in declared.for_table(name)
              if not isinstance(r, NotNullRule) and getattr(r, "named", True)}
    known |= {live for owner, live in claimed if owner == name}
    lives = catalog.constraints(conn, oid, ["CHECK", "FOREIGN KEY"])
    type_checks = _type_check_definitions(conn, name, table)
    forms = rule_compare.normalized_live_checks(conn, name, lives) if type_checks else {}
    for live in lives:
        if live.name not in known and forms.get(live.name) not in type_checks:
            result.extra.append(f"{live.kind} {live.name} on {name}: in the "
                                f"database, not in the models ({live.definition})")
    nullable = {c.name for c in table.columns if c.nullable and not c.primary_key}
    for column in sorted(nullable):
        if catalog.column_not_null(conn, oid, column):
            result.extra.append(f"{name}.{column}: NOT NULL in the database, nullable in the "
                                "models")


def _type_check_definitions(conn: Connection, name: TableName, table: Any) -> set[str]:
    """The CHECKs SQLAlchemy adds for Boolean / Enum columns, as PostgreSQL stores them:
    unnamed in the models, so the database named them (``t_flag_check``); still theirs."""
    found = set()
    for const in table.constraints:
        if isinstance(const, CheckConstraint) and is_type_bound(const) \
                and constraint_name(const) is None:
            try:
                found.add(rule_compare.normalized_check(
                    conn, CheckRule("probe", name, check_condition(const))))
            except IntegrityError:
                continue  # a column the database lacks: reported as missing elsewhere
    return found
