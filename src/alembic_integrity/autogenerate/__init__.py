"""``alembic revision --autogenerate`` that writes the toolkit's ``ensure_*`` operations.
Imports ``operations`` (the op objects it renders), ``rules`` and ``pg``.

Switch it on in env.py — one step, in both the online and the offline
``context.configure`` call::

    from alembic_integrity.autogenerate import integrity_autogenerate

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **integrity_autogenerate(),
    )

(If env.py already passes ``autogenerate_plugins=[...]``, pass that list
instead: ``**integrity_autogenerate(plugins=[...])``.)

For tables that exist both in the models and in the database, autogenerate
then proposes:

* CHECK added: ``op.ensure_check_constraint(...)``; downgrade
  ``op.ensure_constraint_dropped(...)``;
* CHECK predicate changed: one ``op.ensure_check_constraint(...)`` with the
  new predicate (it replaces the constraint); downgrade the same op with the
  old predicate;
* CHECK removed: ``op.ensure_constraint_dropped(...)``; downgrade puts the
  old CHECK back with ``op.ensure_check_constraint(...)``;
* column made NOT NULL / nullable: ``op.ensure_not_null(...)`` /
  ``op.ensure_nullable(...)``, and the other one in downgrade;
* FOREIGN KEY added, changed (columns, referent, ``ondelete``/``onupdate``,
  ``deferrable``/``initially``, ``match``) or removed: as for CHECKs, with
  ``op.ensure_foreign_key(...)``;
* a CHECK or FOREIGN KEY renamed in the models, same definition:
  ``op.ensure_constraint_renamed(old, new, table)`` (``ALTER TABLE ... RENAME
  CONSTRAINT``), and the reverse rename in downgrade.

Each model constraint claims its live one by name, else by definition (a
FOREIGN KEY's columns, referent, actions, MATCH and timing; a CHECK's
normalised predicate). So a constraint the models leave unnamed is no change
when the database has it under PostgreSQL's name (``item_owner_id_fkey``),
and one the models declare twice is one constraint. A new unnamed one is
written with the name PostgreSQL would give it (``<table>_<columns>_fkey``,
``<table>_<column>_check``, with a digit if taken), which makes the
operation re-runnable; a log line names the naming convention that would
name it in the models.

CHECKs are compared as PostgreSQL normalises them, so ``qty>0`` against a
stored ``CHECK ((qty > 0))`` is no change. ``alembic check`` fails on any of
these differences. ``include_name`` / ``include_object`` (type names
``check_constraint``, ``foreign_key_constraint``, ``column``) and
``include_schemas`` apply as to Alembic's own comparisons. New tables are
created by ``create_table`` with their constraints, as usual. The revision
gets ``import alembic_integrity``, which registers ``op.ensure_*``.

Alembic's own ``create_table`` / ``drop_table``, ``create_index`` /
``drop_index`` and ``add_column`` / ``drop_column`` render with
``if_not_exists=True`` / ``if_exists=True`` (``integrity_autogenerate(
rerunnable=False)`` turns this off), so the revision can run again after a
re-stamp with nothing changing, which ``verify`` checks.

How: an Alembic plugin (Alembic >= 1.18) whose comparators sit in the
subgroups of Alembic's built-in CHECK / FOREIGN KEY / nullable comparators at
``DispatchPriority.FIRST`` and return ``STOP``, which makes Alembic skip its
built-ins for those subgroups (the mechanism Alembic uses for its own
user-supplied ``compare_type`` / ``compare_server_default`` hooks); no plain
``create_foreign_key`` / ``alter_column(nullable=...)`` / ``drop_constraint``
is emitted and then rewritten. ``integrity_autogenerate()`` registers the
plugin and returns the ``autogenerate_plugins`` list that enables it.

A native ENUM type of a new table: the downgrade drops it after the table
when no other model table uses it, and (with the package imported, which the
revision then does) a re-run skips the existing table, type included.

Limits: the ops are not batch operations: with ``render_as_batch=True`` they render as
``op.ensure_*`` inside the batch block and run before the batch's own changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.runtime.plugins import Plugin

from . import compare
from . import render as _render  # importing it registers the renderers

PLUGIN_NAME = "alembic_integrity.autogenerate"
DEFAULT_PLUGINS = ("alembic.autogenerate.*",)

_registered = False


def integrity_autogenerate(plugins: Iterable[str] = DEFAULT_PLUGINS, *,
                           rerunnable: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``context.configure`` that switch the integrity comparators on.

    ``plugins`` are the other autogenerate plugins to keep (Alembic's default
    is all of its built-ins, ``"alembic.autogenerate.*"``). ``rerunnable``:
    render Alembic's create/drop table, index and column with
    ``if_not_exists=True`` / ``if_exists=True``.
    """
    register()
    return {"autogenerate_plugins": [*(p for p in plugins if p != PLUGIN_NAME), PLUGIN_NAME],
            _render.RERUNNABLE_OPTION: rerunnable}


def register() -> None:
    """Register the plugin with Alembic once per process (a no-op if already there)."""
    global _registered
    if _registered:
        return
    try:
        plugin = Plugin(PLUGIN_NAME)
    except ValueError:  # registered already, e.g. through an entry point
        _registered = True
        return
    setup(plugin)
    _registered = True


def setup(plugin: Plugin) -> None:
    """Alembic plugin entry: add the comparators (renderers register on import)."""
    compare.setup(plugin)
