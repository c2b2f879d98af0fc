"""The rules the models declare, read from SQLAlchemy ``MetaData``.

Names come out exactly as the naming convention renders them in DDL, so a
rule read here matches the constraint an ``ensure_*`` revision created.
Declarations that cannot become a rule (an unnamed CHECK, say) are returned
as problems, one readable line each, and the rest still load.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, MetaData, Table

from ..compat import convention_name, is_type_bound, pg_dialect
from ..errors import ConfigurationError, first_line
from ..pg.identifiers import MAX_IDENTIFIER_BYTES, TableName
from .kinds import CheckRule, ExpectRule, ForeignKeyRule, NotNullRule, Rule
from .policies import INFO_KEY, Expectation

_DIALECT = pg_dialect()


@dataclass
class DeclaredRules:
    rules: list[Rule] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

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
    for constraint in sorted(table.constraints, key=lambda c: str(c.name or "")):
        if isinstance(constraint, CheckConstraint):
            _check_rule(table, name, constraint, found)
        elif isinstance(constraint, ForeignKeyConstraint):
            _foreign_key_rule(table, name, constraint, found)
    for item in table.info.get(INFO_KEY, ()):
        if isinstance(item, Expectation):
            found.rules.append(ExpectRule(item.name, name, item.condition, tuple(item.policies)))


def _check_rule(table: Table, name: TableName, constraint: CheckConstraint,
                found: DeclaredRules) -> None:
    if is_type_bound(constraint):
        return  # CHECKs SQLAlchemy generates for Boolean/Enum types are not rules we own
    rendered = constraint_name(constraint)
    if rendered is None:
        found.problems.append(
            f"table {name}: CHECK ({check_condition(constraint)}) has no name; give it name=... "
            "(a naming convention alone cannot name a CHECK)"
        )
        return
    if len(rendered.encode()) > MAX_IDENTIFIER_BYTES:
        found.problems.append(f"table {name}: CHECK name {rendered!r} is over 63 bytes")
        return
    found.rules.append(CheckRule(rendered, name, check_condition(constraint),
                                 _policies(constraint.info)))


def _foreign_key_rule(table: Table, name: TableName, constraint: ForeignKeyConstraint,
                      found: DeclaredRules) -> None:
    rendered = constraint_name(constraint)
    if rendered is None:
        found.problems.append(
            f"table {name}: FOREIGN KEY ({', '.join(constraint.column_keys)}) has no name; "
            "give it name=... or a naming convention on the MetaData"
        )
        return
    elements = constraint.elements
    referent = elements[0].column.table
    policies = _policies(constraint.info) or next(
        (_policies(e.info) for e in elements if _policies(e.info)), ()
    )
    found.rules.append(ForeignKeyRule(
        rendered, name, tuple(e.parent.name for e in elements),
        TableName(referent.name, referent.schema), tuple(e.column.name for e in elements),
        constraint.ondelete, constraint.onupdate, policies,
    ))


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
