"""Autogenerate comparators: CHECK, NOT NULL and FOREIGN KEY differences as ``ensure_*`` ops.

They run for tables that exist both in the models and in the database (a new
table is created by ``create_table`` with its constraints, as usual) and see
the database the way the operations do (``catalog``), so a revision is
proposed exactly when applying the operation would change something:

* CHECKs are compared by name, and by definition as PostgreSQL normalises it:
  the model's predicate is normalised on a scratch copy of the live table and
  compared with ``pg_get_constraintdef`` — ``x>0`` and ``(x > 0)`` are equal.
* FOREIGN KEYs are compared by name, then columns, referent and actions.
* NOT NULL is compared per column, skipping identity and computed columns as
  Alembic does.

Each is registered in the same subgroup as Alembic's built-in comparator
("checkconstraints", "foreignkeys", "nullable"), at ``DispatchPriority.FIRST``,
and returns ``PriorityDispatchResult.STOP``: the plugin system then skips the
built-in comparators of that subgroup, so no plain ``create_foreign_key`` /
``alter_column(nullable=...)`` / ``create_check_constraint`` is emitted for the
same change. Only for the ``postgresql`` dialect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from weakref import WeakKeyDictionary

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops as alembic_ops
from alembic.operations.ops import AlterColumnOp, ModifyTableOps
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKeyConstraint,
    MetaData,
    Table,
    text,
)

from ..compat import is_identity_or_computed, nullability_unset
from ..errors import PredicateError
from ..operations.ops import (
    EnsureCheckConstraintOp,
    EnsureConstraintDroppedOp,
    EnsureForeignKeyOp,
    EnsureNotNullOp,
    EnsureNullableOp,
    EnsureOp,
)
from ..pg import catalog
from ..pg.identifiers import MAX_IDENTIFIER_BYTES, TableName
from ..rules import compare as rule_compare
from ..rules.kinds import FK_ACTIONS, CheckRule, ForeignKeyRule, NotNullRule
from ..rules.metadata import DeclaredRules, check_condition, constraint_name, rules_from_metadata

log = logging.getLogger("alembic.autogenerate.alembic_integrity")

DIALECT = "postgresql"
CONTINUE = PriorityDispatchResult.CONTINUE
STOP = PriorityDispatchResult.STOP
_ACTION_WORDS = {code: word for word, code in FK_ACTIONS.items()}

_LIVE_CHECKS = text(
    "SELECT conname, pg_get_constraintdef(oid), pg_get_expr(conbin, conrelid) "
    "FROM pg_constraint WHERE conrelid = :rel AND contype = 'c' ORDER BY conname"
)
_LIVE_FOREIGN_KEYS = text(
    "SELECT c.oid, c.conname, c.convalidated, pg_get_constraintdef(c.oid), r.relname, n.nspname "
    "FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid "
    "JOIN pg_namespace n ON n.oid = r.relnamespace "
    "WHERE c.conrelid = :rel AND c.contype = 'f' ORDER BY c.conname"
)


# --- what the models declare -------------------------------------------------


@dataclass
class Declared:
    """One model table's constraints, split into those the toolkit manages and the rest."""

    checks: dict[str, tuple[CheckRule, CheckConstraint]] = field(default_factory=dict)
    foreign_keys: dict[str, tuple[ForeignKeyRule, ForeignKeyConstraint]] = field(
        default_factory=dict)
    unnamed_foreign_keys: list[ForeignKeyConstraint] = field(default_factory=list)
    # CHECKs SQLAlchemy makes for Boolean/Enum, and unnamed ones: created with the
    # table, never by an ensure_* op, so their live counterparts are left alone.
    unmanaged_checks: list[CheckConstraint] = field(default_factory=list)


# Rules are read once per autogenerate run (reading them walks the whole MetaData).
_RULES: WeakKeyDictionary[AutogenContext, dict[int, DeclaredRules]] = WeakKeyDictionary()


def declared_rules(autogen_context: AutogenContext, metadata: MetaData) -> DeclaredRules:
    per_run = _RULES.setdefault(autogen_context, {})
    if id(metadata) not in per_run:
        per_run[id(metadata)] = rules_from_metadata(metadata)
    return per_run[id(metadata)]


def declared(autogen_context: AutogenContext, table: Table, where: TableName) -> Declared:
    """The table's named CHECK and FOREIGN KEY rules (retargeted to ``where``) and the rest."""
    rules = declared_rules(autogen_context, table.metadata).for_table(
        TableName(table.name, table.schema))
    by_name = {r.name: r for r in rules if isinstance(r, CheckRule | ForeignKeyRule)}
    found = Declared()
    for const in table.constraints:
        rule = by_name.get(constraint_name(const) or "")
        if isinstance(const, CheckConstraint):
            if isinstance(rule, CheckRule):
                rule = replace(rule, table=where, condition=check_condition(const))
                found.checks[rule.name] = (rule, const)
            else:
                found.unmanaged_checks.append(const)
        elif isinstance(const, ForeignKeyConstraint):
            if isinstance(rule, ForeignKeyRule):
                found.foreign_keys[rule.name] = (replace(rule, table=where), const)
            else:
                found.unnamed_foreign_keys.append(const)
    return found


# --- what the database has ---------------------------------------------------


@dataclass(frozen=True)
class LiveCheck:
    name: str
    definition: str  # pg_get_constraintdef, as normalized_check returns it
    condition: str  # the stored predicate, to put it back in a downgrade

    def rule(self, where: TableName) -> CheckRule:
        return CheckRule(self.name, where, self.condition)

    def reflected(self, conn_table: Table) -> CheckConstraint:
        """As a SQLAlchemy object on the reflected table, for include_object hooks."""
        return CheckConstraint(text(self.condition), name=self.name, table=conn_table)


@dataclass(frozen=True)
class LiveForeignKey:
    state: catalog.ConstraintState
    rule: ForeignKeyRule  # the live definition, to put it back in a downgrade
    referent_oid: int


def live_checks(conn: Connection, oid: int) -> dict[str, LiveCheck]:
    rows = conn.execute(_LIVE_CHECKS, {"rel": oid})
    return {r[0]: LiveCheck(r[0], r[1].removesuffix(" NOT VALID"), r[2]) for r in rows}


def live_foreign_keys(conn: Connection, oid: int, table: TableName,
                      default_schema: str | None) -> dict[str, LiveForeignKey]:
    found = {}
    for oid_, name, validated, definition, referent, referent_schema in conn.execute(
        _LIVE_FOREIGN_KEYS, {"rel": oid}
    ):
        state = catalog.ConstraintState(int(oid_), name, "f", bool(validated),
                                        definition.removesuffix(" NOT VALID"))
        fk = catalog.foreign_key_state(conn, state.oid)
        rule = ForeignKeyRule(
            name, table, fk.columns,
            TableName(referent, None if referent_schema == default_schema else referent_schema),
            fk.referent_columns, _action(fk.ondelete), _action(fk.onupdate),
        )
        found[name] = LiveForeignKey(state, rule, fk.referent_oid)
    return found


def _action(code: str) -> str | None:
    word = _ACTION_WORDS[code]
    return None if word == "NO ACTION" else word


def _table_oid(conn: Connection, table: TableName) -> int:
    return catalog.require_table(conn, table, "autogenerate")


@dataclass(frozen=True)
class Emitter:
    """Appends an op to the table's ops if include_object lets the object through."""

    autogen_context: AutogenContext
    modify_table_ops: ModifyTableOps
    where: TableName
    type_: Literal["check_constraint", "foreign_key_constraint"]  # told to include_object

    def emit(self, op: Any, what: str, name: str, obj: Any, reflected: bool,
             compare_to: Any = None) -> None:
        if self.autogen_context.run_object_filters(obj, name, self.type_, reflected,
                                                   compare_to):
            self.modify_table_ops.ops.append(op)
            log.info("Detected %s %r on %s", what, name, self.where)


# --- differences as ops, each paired with the op that undoes it --------------


def added(rule: CheckRule | ForeignKeyRule) -> EnsureOp:
    """A constraint the models have and the database lacks: ensure it; downgrade drops it."""
    return _ensure(rule).paired_with(EnsureConstraintDroppedOp.from_rule(rule))


def removed(old: CheckRule | ForeignKeyRule) -> EnsureOp:
    """A constraint only the database has: drop it; downgrade puts ``old`` back."""
    return EnsureConstraintDroppedOp.from_rule(old).paired_with(_ensure(old))


def changed(new: CheckRule | ForeignKeyRule, old: CheckRule | ForeignKeyRule) -> EnsureOp:
    """Same name, other definition: ``ensure_*`` replaces it either way."""
    return _ensure(new).paired_with(_ensure(old))


def not_null(rule: NotNullRule) -> EnsureOp:
    return EnsureNotNullOp.from_rule(rule).paired_with(EnsureNullableOp.from_rule(rule))


def nullable(rule: NotNullRule) -> EnsureOp:
    return EnsureNullableOp.from_rule(rule).paired_with(EnsureNotNullOp.from_rule(rule))


def _ensure(rule: CheckRule | ForeignKeyRule) -> EnsureCheckConstraintOp | EnsureForeignKeyOp:
    if isinstance(rule, CheckRule):
        return EnsureCheckConstraintOp.from_rule(rule)
    return EnsureForeignKeyOp.from_rule(rule)


# --- CHECK -------------------------------------------------------------------


def compare_checks(autogen_context: AutogenContext, modify_table_ops: ModifyTableOps,
                   schema: str | None, tname: str, conn_table: Table | None,
                   metadata_table: Table | None) -> PriorityDispatchResult:
    """CHECKs added, removed or changed, as ensure_check_constraint / ensure_constraint_dropped."""
    if conn_table is None or metadata_table is None:
        return CONTINUE
    conn = _connection(autogen_context)
    where = TableName(tname, schema)
    out = Emitter(autogen_context, modify_table_ops, where, "check_constraint")
    wanted = declared(autogen_context, metadata_table, where).checks
    live = _compared_live_checks(autogen_context, conn, where, metadata_table)
    for name in sorted(live.keys() - wanted.keys()):
        old = live[name]
        out.emit(removed(old.rule(where)), "removed CHECK", name,
                 old.reflected(conn_table), True)
    for name in sorted(live.keys() & wanted.keys()):
        (rule, const), old = wanted[name], live[name]
        if _check_differs(conn, rule, old, metadata_table, conn_table):
            out.emit(changed(rule, old.rule(where)), "changed CHECK", name, const, False,
                     old.reflected(conn_table))
    for name in sorted(wanted.keys() - live.keys()):
        rule, const = wanted[name]
        out.emit(added(rule), "added CHECK", name, const, False)
    return STOP


def _compared_live_checks(autogen_context: AutogenContext, conn: Connection, where: TableName,
                          metadata_table: Table) -> dict[str, LiveCheck]:
    """Live CHECKs that pass include_name, without those the toolkit does not own."""
    parents = _parents(where)
    live = {
        name: check for name, check in live_checks(conn, _table_oid(conn, where)).items()
        if autogen_context.run_name_filters(name, "check_constraint", parents)
    }
    unmanaged = declared(autogen_context, metadata_table, where).unmanaged_checks
    skipped = _helper_names(where, metadata_table) | {
        name for c in unmanaged if (name := constraint_name(c))
    }
    unnamed = _normalized_unnamed(conn, where, unmanaged)
    return {n: c for n, c in live.items() if n not in skipped and c.definition not in unnamed}


def _helper_names(where: TableName, metadata_table: Table) -> set[str]:
    """The helper CHECK names ensure_not_null uses while it works; never a model's own."""
    return {NotNullRule(where, c.name).name for c in metadata_table.columns
            if len(c.name.encode()) <= MAX_IDENTIFIER_BYTES}


def _normalized_unnamed(conn: Connection, where: TableName,
                        checks: list[CheckConstraint]) -> set[str]:
    """Definitions of the model's unnamed CHECKs: PostgreSQL named their live copies itself."""
    found = set()
    for const in checks:
        if constraint_name(const) is not None:
            continue
        try:
            found.add(rule_compare.normalized_check(conn, CheckRule("probe", where,
                                                               check_condition(const))))
        except PredicateError:
            continue  # refers to a column this revision adds: nothing live to match
    return found


def _check_differs(conn: Connection, rule: CheckRule, live: LiveCheck, metadata_table: Table,
                   conn_table: Table) -> bool:
    try:
        return rule_compare.normalized_check(conn, rule) != live.definition
    except PredicateError:
        if _added_columns(metadata_table, conn_table):
            return True  # the new predicate uses a column this revision adds
        raise


def _added_columns(metadata_table: Table, conn_table: Table) -> set[str]:
    return {c.name for c in metadata_table.columns} - {c.name for c in conn_table.columns}


# --- FOREIGN KEY ---------------------------------------------------------------


def compare_foreign_keys(autogen_context: AutogenContext, modify_table_ops: ModifyTableOps,
                         schema: str | None, tname: str, conn_table: Table | None,
                         metadata_table: Table | None) -> PriorityDispatchResult:
    """FOREIGN KEYs added, removed or changed, as ensure_foreign_key / ensure_constraint_dropped."""
    if conn_table is None or metadata_table is None:
        return CONTINUE
    conn = _connection(autogen_context)
    where = TableName(tname, schema)
    out = Emitter(autogen_context, modify_table_ops, where, "foreign_key_constraint")
    declared_fks = declared(autogen_context, metadata_table, where)
    wanted = declared_fks.foreign_keys
    live = _compared_live_foreign_keys(autogen_context, conn, where)
    reflected = {fk.name: fk for fk in conn_table.foreign_key_constraints}
    _unnamed_foreign_keys(autogen_context, modify_table_ops, conn,
                          declared_fks.unnamed_foreign_keys, live)
    for name in sorted(live.keys() - wanted.keys()):
        out.emit(removed(live[name].rule), "removed FOREIGN KEY", name, reflected.get(name),
                 True)
    for name in sorted(live.keys() & wanted.keys()):
        (rule, const), old = wanted[name], live[name]
        if not rule_compare.same_foreign_key(conn, old.state, rule):
            out.emit(changed(rule, old.rule), "changed FOREIGN KEY", name, const, False,
                     reflected.get(name))
    for name in sorted(wanted.keys() - live.keys()):
        rule, const = wanted[name]
        out.emit(added(rule), "added FOREIGN KEY", name, const, False)
    return STOP


def _compared_live_foreign_keys(autogen_context: AutogenContext, conn: Connection,
                                where: TableName) -> dict[str, LiveForeignKey]:
    """Live FOREIGN KEYs that pass include_name."""
    parents = _parents(where)
    default_schema = autogen_context.dialect.default_schema_name
    found = live_foreign_keys(conn, _table_oid(conn, where), where, default_schema)
    return {
        name: fk for name, fk in found.items()
        if autogen_context.run_name_filters(name, "foreign_key_constraint", parents)
    }


def _unnamed_foreign_keys(autogen_context: AutogenContext, modify_table_ops: ModifyTableOps,
                          conn: Connection, unnamed: list[ForeignKeyConstraint],
                          live: dict[str, LiveForeignKey]) -> None:
    """An unnamed model FK claims the live FK with its columns; else Alembic's plain op.

    ensure_foreign_key needs a name, so an unnamed one (no naming convention)
    is created as Alembic would, by ``create_foreign_key``.
    """
    for const in unnamed:
        match = next((name for name, fk in live.items() if _same_shape(conn, const, fk)), None)
        if match is not None:
            del live[match]
        elif autogen_context.run_object_filters(const, None, "foreign_key_constraint", False,
                                                None):
            modify_table_ops.ops.append(alembic_ops.CreateForeignKeyOp.from_constraint(const))


def _same_shape(conn: Connection, const: ForeignKeyConstraint, live: LiveForeignKey) -> bool:
    referent = const.elements[0].column.table
    return (
        tuple(e.parent.name for e in const.elements) == live.rule.columns
        and tuple(e.column.name for e in const.elements) == live.rule.referent_columns
        and catalog.table_oid(conn, TableName(referent.name, referent.schema))
        == live.referent_oid
    )


# --- NOT NULL ------------------------------------------------------------------


def keep_existing_nullable(autogen_context: AutogenContext, alter_column_op: AlterColumnOp,
                           schema: str | None, tname: str, cname: str, conn_col: Column[Any],
                           metadata_col: Column[Any]) -> PriorityDispatchResult:
    """Stand in for Alembic's nullable comparator: keep its bookkeeping, leave the change to us.

    Other column changes (a type, say) still render ``existing_nullable``;
    the nullability change itself is emitted by :func:`compare_not_null`.
    """
    alter_column_op.existing_nullable = conn_col.nullable
    return STOP


def compare_not_null(autogen_context: AutogenContext, modify_table_ops: ModifyTableOps,
                     schema: str | None, tname: str, conn_table: Table | None,
                     metadata_table: Table | None) -> PriorityDispatchResult:
    """Columns whose nullability differs, as ensure_not_null / ensure_nullable."""
    if conn_table is None or metadata_table is None:
        return CONTINUE
    where = TableName(tname, schema)
    for column in metadata_table.columns:
        conn_col = _compared_column(autogen_context, where, column, conn_table)
        if conn_col is None or not _nullability_differs(column, conn_col):
            continue
        rule = NotNullRule(where, column.name)
        modify_table_ops.ops.append(nullable(rule) if column.nullable else not_null(rule))
        log.info("Detected %s on column %s.%s", "NULL" if column.nullable else "NOT NULL",
                 where, column.name)
    return CONTINUE


def _compared_column(autogen_context: AutogenContext, where: TableName, column: Column[Any],
                     conn_table: Table) -> Column[Any] | None:
    """The live column Alembic compares ``column`` with (same filters), or None."""
    if column.system or column.name not in conn_table.c:
        return None
    parents = _parents(where)
    if not autogen_context.run_name_filters(column.name, "column", parents):
        return None
    conn_col = conn_table.c[column.name]
    if not autogen_context.run_object_filters(column, column.name, "column", False, conn_col):
        return None
    return conn_col


def _nullability_differs(metadata_col: Column[Any], conn_col: Column[Any]) -> bool:
    """As Alembic decides it: identity columns, and computed ones left unset, are skipped."""
    if metadata_col.nullable is conn_col.nullable:
        return False
    identity, computed = is_identity_or_computed(metadata_col.server_default,
                                                 conn_col.server_default)
    if identity:
        return False
    return not (computed and nullability_unset(metadata_col))


def _parents(where: TableName) -> dict[Any, str | None]:
    """What include_name is told about the table a name belongs to."""
    return {"table_name": where.name, "schema_name": where.schema}


# --- wiring --------------------------------------------------------------------


def _connection(autogen_context: AutogenContext) -> Connection:
    conn = autogen_context.connection
    if conn is None:
        raise TypeError("alembic_integrity autogenerate needs a database connection")
    return conn


def setup(plugin: Plugin) -> None:
    """Register the comparators on an Alembic ``Plugin``."""
    comparators: list[tuple[Any, str, str]] = [
        (keep_existing_nullable, "column", "nullable"),
        (compare_not_null, "table", "alembic_integrity.not_null"),
        (compare_checks, "table", "checkconstraints"),
        (compare_foreign_keys, "table", "foreignkeys"),
    ]
    for fn, target, name in comparators:
        plugin.add_autogenerate_comparator(fn, target, name, qualifier=DIALECT,
                                           priority=DispatchPriority.FIRST)
