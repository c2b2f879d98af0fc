"""Autogenerate comparators: CHECK, NOT NULL and FOREIGN KEY differences as ``ensure_*`` ops.

They run for tables that exist both in the models and in the database (a new
table is created by ``create_table`` with its constraints, as usual) and see
the database the way the operations do (``catalog``), so a revision is
proposed exactly when applying the operation would change something:

* CHECKs are compared by name, and by definition as PostgreSQL normalises it:
  both the model's predicate and the live one are parsed by PostgreSQL without
  creating anything (``pg.predicates``) — ``x>0`` and ``(x > 0)`` are equal.
* FOREIGN KEYs are compared by name, then columns, referent, actions, MATCH
  type, DEFERRABLE and INITIALLY.
* A model constraint without a live one of its name (renamed, or unnamed in
  the models) claims an unclaimed live one with the same definition: a rename,
  or no change. See :func:`compare_checks` and :func:`compare_foreign_keys`.
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
from typing import Any, Literal, TypeVar
from weakref import WeakKeyDictionary

from alembic.autogenerate.api import AutogenContext
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
    EnsureConstraintRenamedOp,
    EnsureForeignKeyOp,
    EnsureNotNullOp,
    EnsureNullableOp,
    EnsureOp,
)
from ..pg import catalog
from ..pg.identifiers import MAX_IDENTIFIER_BYTES, TableName
from ..rules import compare as rule_compare
from ..rules.kinds import FK_ACTIONS, CheckRule, ForeignKeyRule, NotNullRule
from ..rules.metadata import (
    DeclaredRules,
    check_condition,
    constraint_name,
    naming_convention_hint,
    rules_from_metadata,
)

log = logging.getLogger("alembic.autogenerate.alembic_integrity")

DIALECT = "postgresql"
RuleT = TypeVar("RuleT", CheckRule, ForeignKeyRule)
CONTINUE = PriorityDispatchResult.CONTINUE
STOP = PriorityDispatchResult.STOP
_ACTION_WORDS = {code: word for word, code in FK_ACTIONS.items()}
_MATCH_WORDS = {"f": "FULL", "p": "PARTIAL"}  # SIMPLE, the default, renders as nothing


# --- what the models declare -------------------------------------------------


@dataclass
class Declared:
    """One model table's constraints: the rules the toolkit manages and the rest."""

    checks: list[tuple[CheckRule, CheckConstraint]] = field(default_factory=list)
    foreign_keys: list[tuple[ForeignKeyRule, ForeignKeyConstraint]] = field(
        default_factory=list)
    # CHECKs SQLAlchemy makes for Boolean/Enum: created with the table, never by an
    # ensure_* op, so their live counterparts are left alone.
    unmanaged_checks: list[CheckConstraint] = field(default_factory=list)


# Rules are read once per autogenerate run (reading them walks the whole MetaData).
_RULES: WeakKeyDictionary[AutogenContext, dict[int, DeclaredRules]] = WeakKeyDictionary()


def declared_rules(autogen_context: AutogenContext, metadata: MetaData) -> DeclaredRules:
    per_run = _RULES.setdefault(autogen_context, {})
    if id(metadata) not in per_run:
        per_run[id(metadata)] = rules_from_metadata(metadata)
    return per_run[id(metadata)]


def declared(autogen_context: AutogenContext, table: Table, where: TableName) -> Declared:
    """The table's CHECK and FOREIGN KEY rules, named or not (retargeted to ``where``), with
    one model constraint each (a constraint declared twice is one rule), and the rest."""
    rules = declared_rules(autogen_context, table.metadata)
    found = Declared()
    for rule in rules.for_table(TableName(table.name, table.schema)):
        const = rules.sources.get(rule, [None])[0]
        if isinstance(rule, CheckRule) and isinstance(const, CheckConstraint):
            found.checks.append((replace(rule, table=where, condition=check_condition(const)),
                                 const))
        elif isinstance(rule, ForeignKeyRule) and isinstance(const, ForeignKeyConstraint):
            found.foreign_keys.append((replace(rule, table=where), const))
    found.unmanaged_checks = [c for c in table.constraints if isinstance(c, CheckConstraint)
                              and getattr(c, "_type_bound", False)]
    return found


# --- what the database has ---------------------------------------------------


@dataclass(frozen=True)
class LiveCheck:
    name: str
    definition: str | None  # the stored predicate as normalized_check gives a rule's
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


def live_checks(conn: Connection, oid: int, where: TableName) -> dict[str, LiveCheck]:
    """The table's CHECKs, their predicates normalised as a rule's are (read only)."""
    states = catalog.constraints(conn, oid, ["CHECK"])
    forms = rule_compare.normalized_live_checks(conn, where, states)
    return {s.name: LiveCheck(s.name, forms.get(s.name), s.expression or "") for s in states}


def live_foreign_keys(conn: Connection, oid: int, table: TableName,
                      default_schema: str | None) -> dict[str, LiveForeignKey]:
    found = {}
    for state in catalog.constraints(conn, oid, ["FOREIGN KEY"]):
        fk = state.foreign_key
        assert fk is not None
        schema = None if fk.referent_schema == default_schema else fk.referent_schema
        rule = ForeignKeyRule(
            state.name, table, fk.columns, TableName(fk.referent_name, schema),
            fk.referent_columns, _action(fk.ondelete), _action(fk.onupdate),
            deferrable=fk.deferrable or None,
            initially="DEFERRED" if fk.initially_deferred else None,
            match=_MATCH_WORDS.get(fk.match),
        )
        found[state.name] = LiveForeignKey(state, rule, fk.referent_oid)
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


def renamed(old: str, new: str, where: TableName) -> EnsureOp:
    """The same constraint under another name: a rename both ways."""
    return EnsureConstraintRenamedOp(old, new, where.name, where.schema).paired_with(
        EnsureConstraintRenamedOp(new, old, where.name, where.schema))


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
    """CHECKs added, removed, changed or renamed, as ensure_* ops.

    Each model CHECK claims its live CHECK: by name; else (renamed, or unnamed
    in the models) an unclaimed one with the same normalised definition. A
    named one found that way under another name is a rename; an unnamed one
    found is no change. Unclaimed live CHECKs are removed.
    """
    if conn_table is None or metadata_table is None:
        return CONTINUE
    conn = _connection(autogen_context)
    where = TableName(tname, schema)
    out = Emitter(autogen_context, modify_table_ops, where, "check_constraint")
    wanted = declared(autogen_context, metadata_table, where).checks
    live = _compared_live_checks(autogen_context, conn, where, metadata_table)
    claimed: set[str] = set()
    missing: list[tuple[CheckRule, CheckConstraint]] = []
    for rule, const in wanted:
        if rule.named and rule.name in live:
            claimed.add(rule.name)
            old = live[rule.name]
            if _check_differs(conn, rule, old, metadata_table, conn_table):
                out.emit(changed(rule, old.rule(where)), "changed CHECK", rule.name, const,
                         False, old.reflected(conn_table))
        else:
            missing.append((rule, const))
    for rule, const in missing:
        twin = _same_check(conn, rule, live, claimed)
        if twin is None:
            rule = _free_name(rule, live)
            out.emit(added(rule), "added CHECK", rule.name, const, False)
        elif rule.named and twin.name != rule.name:
            out.emit(renamed(twin.name, rule.name, where), "renamed CHECK", rule.name, const,
                     False, twin.reflected(conn_table))
    for name in sorted(live.keys() - claimed):
        old = live[name]
        out.emit(removed(old.rule(where)), "removed CHECK", name,
                 old.reflected(conn_table), True)
    return STOP


def _same_check(conn: Connection, rule: CheckRule, live: dict[str, LiveCheck],
                claimed: set[str]) -> LiveCheck | None:
    """An unclaimed live CHECK with the rule's normalised definition (then claimed)."""
    try:
        wanted = rule_compare.normalized_check(conn, rule)
    except PredicateError:
        return None  # uses a column this revision adds: nothing live can match
    for name in sorted(live.keys() - claimed):
        if live[name].definition == wanted:
            claimed.add(name)
            return live[name]
    return None


def _free_name(rule: RuleT, live: dict[str, Any]) -> RuleT:
    """An unnamed model constraint is created under the name PostgreSQL would choose,
    with a digit if that name is taken, as PostgreSQL does; logged with the hint."""
    if rule.named:
        return rule
    name, number = rule.name, 0
    head, _, label = rule.name.rpartition("_")
    while name in live:
        number += 1
        name = f"{head}_{label}{number}"
    log.info("%s on %s has no name in the models: written as %r, the name PostgreSQL would "
             "give it; to choose names, use %s", rule.kind.replace("_", " "), rule.table,
             name, naming_convention_hint(rule.kind))
    return replace(rule, name=name)


def _compared_live_checks(autogen_context: AutogenContext, conn: Connection, where: TableName,
                          metadata_table: Table) -> dict[str, LiveCheck]:
    """Live CHECKs that pass include_name, without those the toolkit does not own."""
    parents = _parents(where)
    live = {
        name: check for name, check in live_checks(conn, _table_oid(conn, where), where).items()
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
    rules = [NotNullRule(where, c.name) for c in metadata_table.columns
             if len(c.name.encode()) <= MAX_IDENTIFIER_BYTES]
    return {r.helper_name for r in rules} | {r.legacy_helper_name for r in rules}


def _normalized_unnamed(conn: Connection, where: TableName,
                        checks: list[CheckConstraint]) -> set[str]:
    """Definitions of the model's unnamed type CHECKs: PostgreSQL named their live copies."""
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
    """FOREIGN KEYs added, removed, changed or renamed, as ensure_* ops.

    Each model FOREIGN KEY (one per structure: declared twice is one) claims
    its live key: by name; else an unclaimed one with the same structure
    (columns, referent, actions, MATCH, DEFERRABLE, INITIALLY) — a rename when
    the models name it otherwise, no change when they leave it unnamed; else,
    for an unnamed one, a key on the same columns and referent, whose
    semantics changed. Unclaimed live keys are removed.
    """
    if conn_table is None or metadata_table is None:
        return CONTINUE
    conn = _connection(autogen_context)
    where = TableName(tname, schema)
    out = Emitter(autogen_context, modify_table_ops, where, "foreign_key_constraint")
    wanted = declared(autogen_context, metadata_table, where).foreign_keys
    live = _compared_live_foreign_keys(autogen_context, conn, where)
    reflected = {fk.name: fk for fk in conn_table.foreign_key_constraints}
    claimed: set[str] = set()
    missing: list[tuple[ForeignKeyRule, ForeignKeyConstraint]] = []
    for rule, const in wanted:
        if rule.named and rule.name in live:
            claimed.add(rule.name)
            old = live[rule.name]
            if not rule_compare.same_foreign_key(conn, old.state, rule):
                out.emit(changed(rule, old.rule), "changed FOREIGN KEY", rule.name, const,
                         False, reflected.get(rule.name))
        else:
            missing.append((rule, const))
    loose: list[tuple[ForeignKeyRule, ForeignKeyConstraint]] = []
    for rule, const in missing:
        twin = _same_foreign_key(conn, rule, live, claimed, loose=False)
        if twin is None:
            loose.append((rule, const))
        elif rule.named and twin.state.name != rule.name:
            out.emit(renamed(twin.state.name, rule.name, where), "renamed FOREIGN KEY",
                     rule.name, const, False, reflected.get(twin.state.name))
    for rule, const in loose:
        twin = None if rule.named else _same_foreign_key(conn, rule, live, claimed, loose=True)
        if twin is None:
            rule = _free_name(rule, live)
            out.emit(added(rule), "added FOREIGN KEY", rule.name, const, False)
        else:
            rule = replace(rule, name=twin.state.name)
            out.emit(changed(rule, twin.rule), "changed FOREIGN KEY", rule.name, const, False,
                     reflected.get(rule.name))
    for name in sorted(live.keys() - claimed):
        out.emit(removed(live[name].rule), "removed FOREIGN KEY", name, reflected.get(name),
                 True)
    return STOP


def _same_foreign_key(conn: Connection, rule: ForeignKeyRule, live: dict[str, LiveForeignKey],
                      claimed: set[str], loose: bool) -> LiveForeignKey | None:
    """An unclaimed live key with the rule's structure (then claimed); the one named like
    the rule first."""
    names = sorted(live.keys() - claimed, key=lambda n: n != rule.name)
    for name in names:
        if rule_compare.same_foreign_key(conn, live[name].state, rule, loose=loose):
            claimed.add(name)
            return live[name]
    return None


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
    pending = _pending_not_null(_connection(autogen_context), where)
    for column in metadata_table.columns:
        conn_col = _compared_column(autogen_context, where, column, conn_table)
        if conn_col is None:
            continue
        unfinished = not column.nullable and column.name in pending
        if not unfinished and not _nullability_differs(column, conn_col):
            continue
        rule = NotNullRule(where, column.name)
        modify_table_ops.ops.append(nullable(rule) if column.nullable else not_null(rule))
        log.info("Detected %s on column %s.%s", "NULL" if column.nullable else "NOT NULL",
                 where, column.name)
    return CONTINUE


def _pending_not_null(conn: Connection, where: TableName) -> set[str]:
    """PostgreSQL 18+: columns whose NOT NULL is NOT VALID (reflection calls them NOT NULL)."""
    if not catalog.features(conn).native_not_null:
        return set()
    oid = _table_oid(conn, where)
    return {name for name, c in catalog.columns(conn, oid).items() if c.not_null_pending}


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
