"""Pins what ``alembic_integrity.compat`` reads from other libraries' internals.

If SQLAlchemy, Alembic or pytest rename what these functions rely on, this fails
here first, on the installed versions and on the lowest supported ones (CI runs both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Table,
)

from alembic_integrity import compat

CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
              "ck": "ck_%(table_name)s_%(constraint_name)s"}


def tables() -> tuple[Table, Table]:
    metadata = MetaData(naming_convention=CONVENTION)
    parent = Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table("child", metadata, Column("id", Integer, primary_key=True),
                  Column("parent_id", ForeignKey("parent.id")),
                  Column("flag", Boolean(create_constraint=True, name="flag_bool")),
                  CheckConstraint("id > 0", name="positive"))
    return parent, child


def test_convention_name_is_the_name_ddl_uses() -> None:
    _, child = tables()
    fk = next(iter(child.foreign_key_constraints))
    assert compat.convention_name(fk, child) == "fk_child_parent_id_parent"
    check = next(c for c in child.constraints
                 if isinstance(c, CheckConstraint) and not compat.is_type_bound(c))
    assert compat.convention_name(check, child) == "ck_child_positive"


def test_convention_name_without_convention_is_none() -> None:
    metadata = MetaData()
    Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table("child", metadata, Column("parent_id", ForeignKey("parent.id")))
    fk = next(iter(child.foreign_key_constraints))
    assert compat.convention_name(fk, child) is None


def test_type_bound_checks_are_recognised() -> None:
    _, child = tables()
    flags = {c.name: compat.is_type_bound(c) for c in child.constraints
             if isinstance(c, CheckConstraint)}
    assert flags == {"ck_child_positive": False, "ck_child_flag_bool": True}


def test_nullability_unset_only_when_not_given() -> None:
    assert compat.nullability_unset(Column("a", Integer))
    assert not compat.nullability_unset(Column("b", Integer, nullable=True))
    assert not compat.nullability_unset(Column("c", Integer, nullable=False))


def test_identity_and_computed_defaults() -> None:
    identity = Column("i", Integer, Identity()).server_default
    computed = Column("c", Integer, Computed("1")).server_default
    assert compat.is_identity_or_computed(identity, None) == (True, False)
    assert compat.is_identity_or_computed(None, computed) == (False, True)


def test_pg_dialect_quotes_like_postgresql() -> None:
    preparer = compat.pg_dialect().identifier_preparer
    assert preparer.quote("Order") == '"Order"' and preparer.quote("order") == '"order"'


# --------------------------------------------------------------------------- Alembic


def alembic_script(tmp_path: Path) -> ScriptDirectory:
    """A linear history r1 <- r2 <- r3, as files (no database needed for step lists)."""
    versions = tmp_path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text("")
    for rev, down in (("r1", None), ("r2", "r1"), ("r3", "r2")):
        (versions / f"{rev}.py").write_text(
            f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    config = Config()
    config.set_main_option("script_location", str(tmp_path / "migrations"))
    return ScriptDirectory.from_config(config)


def moves(steps: list[Any]) -> list[tuple[tuple[str, ...], tuple[str, ...], bool]]:
    return [(tuple(s.from_revisions), tuple(s.to_revisions), s.is_upgrade) for s in steps]


def test_upgrade_steps_from_base_and_from_a_head(tmp_path: Path) -> None:
    script = alembic_script(tmp_path)
    assert moves(compat.upgrade_steps(script, "r2", ())) == [((), ("r1",), True),
                                                              (("r1",), ("r2",), True)]
    assert moves(compat.upgrade_steps(script, "r3", ("r2",))) == [(("r2",), ("r3",), True)]
    assert compat.upgrade_steps(script, "r2", ("r2",)) == []


def test_downgrade_steps_newest_first(tmp_path: Path) -> None:
    script = alembic_script(tmp_path)
    assert moves(compat.downgrade_steps(script, "r1", ("r3",))) == [
        (("r3",), ("r2",), False), (("r2",), ("r1",), False)]
    assert moves(compat.downgrade_steps(script, "base", ("r1",))) == [(("r1",), (), False)]


def test_stamp_steps_move_the_version_table_only(tmp_path: Path) -> None:
    script = alembic_script(tmp_path)
    (step,) = compat.stamp_steps(script, ("r1",), ("r3",))
    assert (step.from_revisions, step.to_revisions, step.is_upgrade) == (("r3",), ("r1",), False)
    step.migration_fn()  # runs no revision
    (base,) = compat.stamp_steps(script, (), ("r1",))
    assert base.to_revisions == ()


class _Connection:
    def __init__(self, in_transaction: bool) -> None:
        self._in = in_transaction

    def in_transaction(self) -> bool:
        return self._in


def test_owns_transaction_reads_alembic_attributes() -> None:
    """The private attributes exist (no default hides a rename) and mean what we assume."""
    ctx = MigrationContext.configure(dialect_name="postgresql")
    assert hasattr(ctx, "_in_external_transaction") and hasattr(ctx, "_transaction")
    assert compat.owns_transaction(ctx)
    ctx._in_external_transaction = True
    assert not compat.owns_transaction(ctx)
    ctx._in_external_transaction = False
    ctx.connection = _Connection(in_transaction=True)  # type: ignore[assignment]
    assert ctx._transaction is None and not compat.owns_transaction(ctx)
