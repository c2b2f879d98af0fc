"""The ``ensure_*`` operations, registered on Alembic's ``op``.

Each operation object knows its rule and how to plan it from the catalog;
``implementations`` runs the plan. Like Alembic's own ``ops.py``, every
object carries what autogenerate needs: the op that undoes it (``reverse``)
and the difference it stands for (``to_diff_tuple``, which ``alembic check``
and ``compare_metadata()`` list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import Connection

from ..errors import ConfigurationError
from ..pg.identifiers import TableName
from ..rules.kinds import (
    CheckRule,
    ForeignKeyRule,
    NotNullRule,
    default_check_name,
    default_foreign_key_name,
)
from ..rules.metadata import naming_convention_hint
from . import ddl_plan as planner
from . import partitions


def _name_needed(op_name: str, table: str, kind: str, default: str) -> ConfigurationError:
    """An idempotent operation finds its constraint again by name: it cannot do without."""
    return ConfigurationError(
        f"{op_name} on {table}: a constraint name is needed (a re-run finds the constraint by "
        f"it); pass one, e.g. {default!r} as PostgreSQL would name it, or name it in the "
        f"models with {naming_convention_hint(kind)}")


class EnsureOp(MigrateOperation):
    """Common shape: a name for logs, settings overrides, and a planner.

    Every ``ensure_*`` accepts ``repair=True``: between ``ADD ... NOT VALID``
    and ``VALIDATE`` it applies the repair policies that ``target_metadata``
    declares for the rule, so rows written since the pre-flight do not fail
    the deploy. The other keyword arguments are settings (``lock_timeout``...).
    """

    op_name = ""
    # The op that undoes this one, when autogenerate knows it (see paired_with):
    # the downgrade of a *changed* CHECK or FOREIGN KEY is the old definition, and
    # that of a *dropped* one the dropped definition, which no op can work out
    # from its own arguments.
    undo: EnsureOp | None = None

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        settings = dict(settings or {})
        self.repair = bool(settings.pop("repair", False))
        self.settings = settings

    def plan(self, conn: Connection | None) -> planner.Plan:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError

    def paired_with(self, undo: EnsureOp) -> EnsureOp:
        """Link this op and the one that undoes it both ways; return this op."""
        self.undo = undo
        undo.undo = self
        return self

    def reverse(self) -> EnsureOp:
        """The paired undo if there is one, else the one this op's arguments imply."""
        if self.undo is None:
            return self.reverse_from_arguments()
        return self.undo

    def reverse_from_arguments(self) -> EnsureOp:
        raise NotImplementedError


@Operations.register_operation("ensure_check_constraint")
class EnsureCheckConstraintOp(EnsureOp):
    op_name = "ensure_check_constraint"

    def __init__(self, name: str, table_name: str, condition: str,
                 schema: str | None = None, **settings: Any) -> None:
        super().__init__(settings)
        if not name:
            raise _name_needed("ensure_check_constraint", table_name, "check",
                               default_check_name(table_name, []))
        self.rule = CheckRule(name, TableName(table_name, schema), str(condition))

    @classmethod
    def ensure_check_constraint(cls, operations: Operations, name: str, table_name: str,
                                condition: str, schema: str | None = None,
                                **settings: Any) -> Any:
        """Add a CHECK NOT VALID and VALIDATE it separately; nothing if already in place."""
        return operations.invoke(cls(name, table_name, condition, schema, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        return planner.plan_check(conn, self.rule)

    @property
    def label(self) -> str:
        return f"CHECK {self.rule.name} on {self.rule.table}"

    @classmethod
    def from_rule(cls, rule: CheckRule) -> EnsureCheckConstraintOp:
        return cls(rule.name, rule.table.name, rule.condition, rule.table.schema)

    def reverse_from_arguments(self) -> EnsureConstraintDroppedOp:
        return EnsureConstraintDroppedOp.from_rule(self.rule)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.op_name, str(self.rule.table), self.rule.name, self.rule.condition)


@Operations.register_operation("ensure_not_null")
class EnsureNotNullOp(EnsureOp):
    op_name = "ensure_not_null"

    def __init__(self, table_name: str, column_name: str, schema: str | None = None,
                 **settings: Any) -> None:
        super().__init__(settings)
        self.rule = NotNullRule(TableName(table_name, schema), column_name)

    @classmethod
    def ensure_not_null(cls, operations: Operations, table_name: str, column_name: str,
                        schema: str | None = None, **settings: Any) -> Any:
        """SET NOT NULL without a long ACCESS EXCLUSIVE scan (via a validated helper CHECK)."""
        return operations.invoke(cls(table_name, column_name, schema, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        return planner.plan_not_null(conn, self.rule)

    @property
    def label(self) -> str:
        return f"NOT NULL {self.rule.table}.{self.rule.column}"

    @classmethod
    def from_rule(cls, rule: NotNullRule) -> EnsureNotNullOp:
        return cls(rule.table.name, rule.column, rule.table.schema)

    def reverse_from_arguments(self) -> EnsureNullableOp:
        return EnsureNullableOp.from_rule(self.rule)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.op_name, str(self.rule.table), self.rule.column)


@Operations.register_operation("ensure_foreign_key")
class EnsureForeignKeyOp(EnsureOp):
    op_name = "ensure_foreign_key"

    def __init__(self, name: str, source_table: str, referent_table: str,
                 local_cols: Sequence[str], remote_cols: Sequence[str],
                 ondelete: str | None = None, onupdate: str | None = None,
                 schema: str | None = None, referent_schema: str | None = None,
                 deferrable: bool | None = None, initially: str | None = None,
                 match: str | None = None, **settings: Any) -> None:
        super().__init__(settings)
        if not name:
            raise _name_needed("ensure_foreign_key", source_table, "foreign_key",
                               default_foreign_key_name(source_table, tuple(local_cols)))
        self.rule = ForeignKeyRule(
            name, TableName(source_table, schema), tuple(local_cols),
            TableName(referent_table, referent_schema), tuple(remote_cols), ondelete, onupdate,
            deferrable=deferrable, initially=initially, match=match,
        )

    @classmethod
    def ensure_foreign_key(cls, operations: Operations, name: str, source_table: str,
                           referent_table: str, local_cols: Sequence[str],
                           remote_cols: Sequence[str], ondelete: str | None = None,
                           onupdate: str | None = None, schema: str | None = None,
                           referent_schema: str | None = None, deferrable: bool | None = None,
                           initially: str | None = None, match: str | None = None,
                           **settings: Any) -> Any:
        """Add a FOREIGN KEY NOT VALID and VALIDATE it separately; nothing if in place.

        ``deferrable``, ``initially`` and ``match`` are part of the definition:
        a live key that differs in any of them is replaced.
        """
        return operations.invoke(cls(name, source_table, referent_table, local_cols,
                                     remote_cols, ondelete, onupdate, schema, referent_schema,
                                     deferrable, initially, match, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        by_partition = partitions.plan_foreign_key(conn, self.rule) if conn is not None else None
        return by_partition or planner.plan_foreign_key(conn, self.rule)

    @property
    def label(self) -> str:
        return f"FOREIGN KEY {self.rule.name} on {self.rule.table}"

    @classmethod
    def from_rule(cls, rule: ForeignKeyRule) -> EnsureForeignKeyOp:
        return cls(rule.name, rule.table.name, rule.referent.name, rule.columns,
                   rule.referent_columns, rule.ondelete, rule.onupdate,
                   rule.table.schema, rule.referent.schema, rule.deferrable, rule.initially,
                   rule.match)

    def reverse_from_arguments(self) -> EnsureConstraintDroppedOp:
        return EnsureConstraintDroppedOp.from_rule(self.rule)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        rule = self.rule
        return (self.op_name, str(rule.table), rule.name, rule.columns, str(rule.referent),
                rule.referent_columns, rule.ondelete, rule.onupdate, rule.deferrable,
                rule.initially, rule.match)


@Operations.register_operation("ensure_constraint_renamed")
class EnsureConstraintRenamedOp(EnsureOp):
    """``ALTER TABLE ... RENAME CONSTRAINT``: the same constraint under a new name.

    What autogenerate writes when the models rename a constraint whose
    definition did not change, instead of a drop and re-add (which would scan
    the table again to validate what is already valid).
    """

    op_name = "ensure_constraint_renamed"

    def __init__(self, old_name: str, new_name: str, table_name: str,
                 schema: str | None = None, **settings: Any) -> None:
        super().__init__(settings)
        self.old_name = old_name
        self.new_name = new_name
        self.table = TableName(table_name, schema)

    @classmethod
    def ensure_constraint_renamed(cls, operations: Operations, old_name: str, new_name: str,
                                  table_name: str, schema: str | None = None,
                                  **settings: Any) -> Any:
        """Rename a constraint; nothing if it already has the new name and the old is gone."""
        return operations.invoke(cls(old_name, new_name, table_name, schema, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        return planner.plan_rename(conn, self.table, self.old_name, self.new_name)

    @property
    def label(self) -> str:
        return f"rename constraint {self.old_name} to {self.new_name} on {self.table}"

    def reverse_from_arguments(self) -> EnsureConstraintRenamedOp:
        return EnsureConstraintRenamedOp(self.new_name, self.old_name, self.table.name,
                                         self.table.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.op_name, str(self.table), self.old_name, self.new_name)


@Operations.register_operation("ensure_constraint_dropped")
class EnsureConstraintDroppedOp(EnsureOp):
    op_name = "ensure_constraint_dropped"

    def __init__(self, name: str, table_name: str, schema: str | None = None,
                 **settings: Any) -> None:
        super().__init__(settings)
        self.name = name
        self.table = TableName(table_name, schema)

    @classmethod
    def ensure_constraint_dropped(cls, operations: Operations, name: str, table_name: str,
                                  schema: str | None = None, **settings: Any) -> Any:
        """Drop a constraint if it exists, under lock_timeout with retries."""
        return operations.invoke(cls(name, table_name, schema, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        return planner.plan_drop(conn, self.table, self.name)

    @property
    def label(self) -> str:
        return f"drop constraint {self.name} on {self.table}"

    @classmethod
    def from_rule(cls, rule: CheckRule | ForeignKeyRule) -> EnsureConstraintDroppedOp:
        return cls(rule.name, rule.table.name, rule.table.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.op_name, str(self.table), self.name)


@Operations.register_operation("ensure_nullable")
class EnsureNullableOp(EnsureOp):
    op_name = "ensure_nullable"

    def __init__(self, table_name: str, column_name: str, schema: str | None = None,
                 **settings: Any) -> None:
        super().__init__(settings)
        self.table = TableName(table_name, schema)
        self.column = column_name

    @classmethod
    def ensure_nullable(cls, operations: Operations, table_name: str, column_name: str,
                        schema: str | None = None, **settings: Any) -> Any:
        """DROP NOT NULL if the column has it, under lock_timeout with retries."""
        return operations.invoke(cls(table_name, column_name, schema, **settings))

    def plan(self, conn: Connection | None) -> planner.Plan:
        return planner.plan_nullable(conn, self.table, self.column)

    @property
    def label(self) -> str:
        return f"nullable {self.table}.{self.column}"

    @classmethod
    def from_rule(cls, rule: NotNullRule) -> EnsureNullableOp:
        return cls(rule.table.name, rule.column, rule.table.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.op_name, str(self.table), self.column)
