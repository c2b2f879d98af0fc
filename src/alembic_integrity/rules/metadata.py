"""The rules the models declare, read from SQLAlchemy ``MetaData``.

Names come out exactly as the naming convention renders them in DDL, so a
rule read here matches the constraint an ``ensure_*`` revision created. A
constraint the models leave unnamed is a rule all the same (``named=False``):
it carries the name PostgreSQL would give it, and the audit, repair and drift
find its live counterpart by structure (FOREIGN KEY) or normalised definition
(CHECK), whatever the database calls it. A constraint declared twice is one
rule. Declarations that cannot become a rule (a name over 63 bytes, say) are
returned as problems, one readable line each, and the rest still load.
"""

from __future__ import annotations

import importlib
import io
import re
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, MetaData, Table

from ..compat import convention_name, is_type_bound, pg_dialect
from ..errors import ConfigurationError, first_line
from ..pg.identifiers import MAX_IDENTIFIER_BYTES, TableName
from .kinds import (
    CheckRule,
    ExpectRule,
    ForeignKeyRule,
    NotNullRule,
    Rule,
    default_check_name,
    default_foreign_key_name,
)
from .policies import INFO_KEY, Expectation

_DIALECT = pg_dialect()
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_IDENTIFIER = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)')


@dataclass
class DeclaredRules:
    rules: list[Rule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # the model constraint objects behind each CHECK / FOREIGN KEY rule (two when declared twice)
    sources: dict[Rule, list[Any]] = field(default_factory=dict)

    def for_table(self, table: TableName) -> list[Rule]:
        return [r for r in self.rules if r.table == table]

    @property
    def tables(self) -> list[TableName]:
        return list(dict.fromkeys(r.table for r in self.rules))


def rules_from_metadata(metadata: MetaData) -> DeclaredRules:
    found = DeclaredRules()
    for table in metadata.sorted_tables:
        _table_rules(table, found)
    return found


def _table_rules(table: Table, found: DeclaredRules) -> None:
    name = TableName(table.name, table.schema)
    for column in table.columns:
        if not column.nullable and not column.primary_key:
            found.rules.append(NotNullRule(name, column.name, _policies(column.info)))
    taken: set[str] = set()
    constraints: list[CheckRule | ForeignKeyRule] = []
    # named first, so that an unnamed duplicate folds into its named twin
    for constraint in sorted(table.constraints,
                             key=lambda c: (constraint_name(c) is None, str(c.name or ""))):
        rule: CheckRule | ForeignKeyRule | None = None
        if isinstance(constraint, CheckConstraint):
            rule = _check_rule(table, name, constraint, taken, found)
        elif isinstance(constraint, ForeignKeyConstraint):
            rule = _foreign_key_rule(name, constraint, taken, found)
        if rule is not None:
            kept = _add_once(constraints, rule)
            found.sources.setdefault(kept, []).append(constraint)
    found.rules.extend(constraints)
    for item in table.info.get(INFO_KEY, ()):
        if isinstance(item, Expectation):
            found.rules.append(ExpectRule(item.name, name, item.condition, tuple(item.policies)))


def _add_once(rules: list[CheckRule | ForeignKeyRule], rule: CheckRule | ForeignKeyRule
              ) -> CheckRule | ForeignKeyRule:
    """A constraint the models declare twice (say ``ForeignKey`` on the column and a
    ``ForeignKeyConstraint`` in ``__table_args__``) is one rule: the database can
    only be asked to hold it once. The first keeps its name; policies are merged."""
    for i, other in enumerate(rules):
        if same_declaration(other, rule):
            if not other.policies and rule.policies:
                rules[i] = replace(other, policies=rule.policies)
            return rules[i]
    rules.append(rule)
    return rule


def same_declaration(a: Rule, b: Rule) -> bool:
    if isinstance(a, ForeignKeyRule) and isinstance(b, ForeignKeyRule):
        return a.structure == b.structure and (a.name == b.name or not (a.named and b.named))
    if isinstance(a, CheckRule) and isinstance(b, CheckRule):
        return (a.table, a.condition) == (b.table, b.condition) and (
            a.name == b.name or not (a.named and b.named))
    return False


def _unique(name: str, taken: set[str]) -> str:
    """PostgreSQL's choice for a second unnamed constraint with the same name: a digit."""
    candidate, number = name, 0
    while candidate in taken:
        number += 1
        head, _, label = name.rpartition("_")
        candidate = f"{head}_{label}{number}"
    taken.add(candidate)
    return candidate


def _check_rule(table: Table, name: TableName, constraint: CheckConstraint, taken: set[str],
                found: DeclaredRules) -> CheckRule | None:
    if is_type_bound(constraint):
        return None  # CHECKs SQLAlchemy generates for Boolean/Enum types are not rules we own
    condition = check_condition(constraint)
    rendered = constraint_name(constraint)
    if rendered is not None and len(rendered.encode()) > MAX_IDENTIFIER_BYTES:
        found.problems.append(f"table {name}: CHECK name {rendered!r} is over 63 bytes")
        return None
    if rendered is None:
        guessed = default_check_name(table.name, predicate_columns(condition, table))
        return CheckRule(_unique(guessed, taken), name, condition, _policies(constraint.info),
                         named=False)
    taken.add(rendered)
    return CheckRule(rendered, name, condition, _policies(constraint.info))


def predicate_columns(condition: str, table: Table) -> list[str]:
    """The table's columns a predicate mentions (string literals left out), in order."""
    columns = {c.name for c in table.columns}
    found = []
    for quoted, bare in _IDENTIFIER.findall(_LITERAL.sub("''", condition)):
        word = quoted.replace('""', '"') if quoted else bare
        if word in columns:
            found.append(word)
        elif not quoted and word.lower() in columns:
            found.append(word.lower())
    return found


def _foreign_key_rule(name: TableName, constraint: ForeignKeyConstraint, taken: set[str],
                      found: DeclaredRules) -> ForeignKeyRule | None:
    rendered = constraint_name(constraint)
    elements = constraint.elements
    columns = tuple(e.parent.name for e in elements)
    if rendered is not None and len(rendered.encode()) > MAX_IDENTIFIER_BYTES:
        found.problems.append(f"table {name}: FOREIGN KEY name {rendered!r} is over 63 bytes")
        return None
    referent = elements[0].column.table
    policies = _policies(constraint.info) or next(
        (_policies(e.info) for e in elements if _policies(e.info)), ()
    )
    if rendered is None:
        chosen = _unique(default_foreign_key_name(name.name, columns), taken)
    else:
        chosen = rendered
        taken.add(rendered)
    return ForeignKeyRule(
        chosen, name, columns,
        TableName(referent.name, referent.schema), tuple(e.column.name for e in elements),
        constraint.ondelete, constraint.onupdate, policies,
        deferrable=constraint.deferrable, initially=constraint.initially,
        match=constraint.match, named=rendered is not None,
    )


def naming_convention_hint(kind: str) -> str:
    """What to put on the MetaData so that SQLAlchemy names every constraint of ``kind``."""
    if kind == "foreign_key":
        return ('MetaData(naming_convention={"fk": '
                '"fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"})')
    return ('MetaData(naming_convention={"ck": "ck_%(table_name)s_%(constraint_name)s"}) '
            "plus name=... on each CheckConstraint")


def constraint_name(constraint: Any) -> str | None:
    """The name DDL would use, after the MetaData's naming convention; None if unnamed."""
    name = constraint.name
    if isinstance(name, str) and name:
        return str(name)
    table = getattr(constraint, "table", None)
    if table is None:
        return None
    try:
        return convention_name(constraint, table)
    except Exception:  # a convention token that cannot be resolved: unnamed
        return None


def check_condition(constraint: CheckConstraint) -> str:
    """The predicate as CREATE TABLE renders it: columns unqualified, literals inline."""
    compiler = _DIALECT.statement_compiler(_DIALECT, None)
    text = str(compiler.process(constraint.sqltext, include_table=False, literal_binds=True))
    return text.replace("%%", "%")  # the pyformat escape; raw.execute sends SQL verbatim


def _policies(info: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(info.get(INFO_KEY, ()))


def load_metadata(spec: str) -> MetaData:
    """``package.module:attribute`` to the MetaData it names."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--metadata {spec!r}: expected module:attribute, "
                                 "e.g. myapp.models:Base.metadata")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, SyntaxError, or whatever the module raises
        raise ConfigurationError(f"--metadata {spec!r}: importing {module_name} failed: "
                                 f"{type(err).__name__}: {first_line(err)}") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"--metadata {spec!r}: {module_name} has no {attribute}")
        target = getattr(target, part)
    if not isinstance(target, MetaData):
        raise ConfigurationError(f"--metadata {spec!r} is a {type(target).__name__}, "
                                 "not a SQLAlchemy MetaData")
    return target


def metadata_from_alembic(config_path: str = "alembic.ini") -> MetaData:
    """The ``target_metadata`` env.py passes to ``context.configure``, without connecting."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    config = Config(config_path, stdout=io.StringIO())
    config.output_buffer = io.StringIO()
    config.attributes["configure_logger"] = False  # honoured by env.py files that check it
    if not _parses(config.get_main_option("sqlalchemy.url")):  # empty, or a placeholder ("")
        config.set_main_option("sqlalchemy.url", "postgresql+psycopg://")  # offline: dialect only
    script = ScriptDirectory.from_config(config)
    seen: dict[str, Any] = {}

    def capture(rev: Any, context: Any) -> list[Any]:
        seen["metadata"] = context.opts.get("target_metadata")
        return []

    try:
        with EnvironmentContext(config, script, fn=capture, as_sql=True,
                                output_buffer=io.StringIO()):
            script.run_env()
    except Exception as err:  # env.py is the project's code: anything may come out of it
        raise ConfigurationError(
            f"{config_path}: running env.py to find target_metadata failed: "
            f"{type(err).__name__}: {first_line(err)}; fix env.py or pass --metadata module:attr"
        ) from err
    metadata = seen.get("metadata")
    if isinstance(metadata, list | tuple):
        metadata = metadata[0] if len(metadata) == 1 else None
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(
            f"{config_path}: env.py sets no single target_metadata; pass --metadata module:attr"
        )
    return metadata


def _parses(url: str | None) -> bool:
    """A URL SQLAlchemy can read; ``""`` or ``driver://...`` placeholders in alembic.ini are not."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url or not url.strip():
        return False
    try:
        make_url(url.strip()).get_dialect()
    except (ArgumentError, ValueError, ImportError, AttributeError):
        return False
    return True
