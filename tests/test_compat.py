"""Pins what ``alembic_integrity.compat`` reads from other libraries' internals.

If SQLAlchemy, Alembic or pytest rename what these functions rely on, this fails
here first, on the installed versions and on the lowest supported ones (CI runs both).
"""

from __future__ import annotations

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
