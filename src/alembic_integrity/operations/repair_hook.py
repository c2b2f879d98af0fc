"""``repair=True`` on an operation: repair the rule's rows between ADD NOT VALID and VALIDATE.

Rows written between the pre-flight and the migration would otherwise fail
the deploy. The policies are the ones ``target_metadata`` declares for the
rule, found by constraint name (or table and column for NOT NULL, or structure
or definition for a constraint the models leave unnamed).
"""

from __future__ import annotations

import logging

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData

from ..errors import ConfigurationError
from ..rules.kinds import CheckRule, ForeignKeyRule, NotNullRule, Rule
from ..rules.metadata import DeclaredRules, rules_from_metadata
from ..settings import Settings
from .ddl_plan import Step
from .executor import Hook

log = logging.getLogger("alembic_integrity")


def repair_hook(ctx: MigrationContext, settings: Settings) -> Hook:
    declared = _declared(ctx)

    def hook(conn: Connection, step: Step) -> None:
        from ..repair import repair_rule  # imported late: repair imports the executor

        rule = find_declared(declared, step.rule)
        result = repair_rule(conn, rule, declared, settings=settings)
        log.info("  repair %s: %d row(s) changed, %d left for a person%s", rule.label,
                 result.changed, result.for_person,
                 f" (undo: {result.restore_command})" if result.restore_command else "")

    return hook


def _declared(ctx: MigrationContext) -> DeclaredRules:
    metadata = ctx.opts.get("target_metadata")
    if isinstance(metadata, list | tuple):
        metadata = metadata[0] if len(metadata) == 1 else None
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(
            "repair=True needs the rules' policies, but env.py passes no single "
            "target_metadata to context.configure()"
        )
    return rules_from_metadata(metadata)


def find_declared(declared: DeclaredRules, wanted: Rule | None) -> Rule:
    for rule in declared.rules:
        if wanted is not None and _same_rule(rule, wanted):
            return rule
    label = wanted.label if wanted is not None else "?"
    raise ConfigurationError(
        f"repair=True on {label}: target_metadata declares no such rule, so there are no "
        "policies to apply; declare it in the models or drop repair=True"
    )


def _same_rule(declared: Rule, wanted: Rule) -> bool:
    if isinstance(wanted, NotNullRule):
        return isinstance(declared, NotNullRule) and (declared.table, declared.column) == (
            wanted.table, wanted.column)
    if isinstance(wanted, ForeignKeyRule) and isinstance(declared, ForeignKeyRule) \
            and not declared.named:
        return declared.structure == wanted.structure  # an unnamed model FK: by structure
    if isinstance(wanted, CheckRule) and isinstance(declared, CheckRule) and not declared.named:
        return (declared.table, declared.condition) == (wanted.table, wanted.condition)
    return declared.kind == wanted.kind and (declared.name, declared.table) == (
        wanted.name, wanted.table)
