"""Many revisions, each upgraded and re-run, in ONE env.py run: verify's cost per revision.

A separate ``alembic upgrade`` per revision and per re-run pays env.py, the
version-table checks and a connection each time: more than a small revision
itself costs. Here Alembic gets a generator of steps (see
:meth:`AlembicRunner.run_steps`): it runs a revision's upgrade, and before it asks
for the next step our code commits (``MigrationContext.autocommit_block``, as the
``ensure_*`` operations do), reads what changed through the DDL log
(:class:`~alembic_integrity.pg.ddl_log.SnapshotTracker`), runs the revision's
``upgrade()`` again (inside Alembic's transaction, where ``op`` is bound; or, when
that is not possible, yields a stamp back and the same upgrade step), commits and
compares. Committing after each revision keeps a failed re-run from undoing the
first run, as the separate commands did. Revisions whose parent is not the one
head (branch points, merges) are re-run in a command of their own.

When env.py opened the transaction itself (``compat.owns_transaction`` is false),
nothing can be committed in between: such a batch stops after one revision, so
each revision still gets its own env.py run.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import compat
from ..pg.snapshot import differences
from .report import Step, plural

if TYPE_CHECKING:
    from .steps import Run


class _Batch:
    """Steps of the report run inside one command: the one in progress, timed, then added."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.pending: Step | None = None
        self.began = 0.0

    def _begin(self, step: Step) -> Step:
        self.pending, self.began = step, time.perf_counter()
        return step

    def _finish(self) -> None:
        assert self.pending is not None
        self.pending.seconds = time.perf_counter() - self.began
        with self.run.runner.uncaptured():
            self.run.add(self.pending)
        self.pending = None


class DowngradeBatch(_Batch):
    """The downgrades of ``plan`` (name, revision, target) in one command, each its own step.

    After the last one, what the downgrades left behind is read (in the command's
    transaction) and reported as warnings of that step.
    """

    def __init__(self, run: Run, plan: list[tuple[str, str | None, str]]) -> None:
        super().__init__(run)
        self.plan = plan

    def first_step(self) -> Step:
        name, revision, _ = self.plan[0]
        return Step(name, "downgrade", revision)

    def work(self, heads: tuple[str, ...], context: Any) -> Iterator[Any]:
        current = heads
        for index, (name, revision, target) in enumerate(self.plan):
            step = self._begin(Step(name, "downgrade", revision))
            yield from compat.downgrade_steps(self.run.runner.script, target, current)
            current = () if target == "base" else (target,)
            if index == len(self.plan) - 1:
                step.warnings.extend(self.run.leftovers(context.connection))
            self._finish()


class UpgradeBatch(_Batch):
    """Revisions ``scripts[start:stop]`` upgraded and re-run in one command."""

    def __init__(self, run: Run, scripts: list[Any], start: int, stop: int) -> None:
        super().__init__(run)
        self.scripts = scripts
        self.start = start
        self.stop = stop
        self.next_index = start  # the first revision not upgraded yet
        self.owns: bool | None = None  # Alembic owns the transaction: we may commit
        self.rerun_outside: tuple[str, tuple[str, ...]] | None = None  # (revision, before)

    def first_step(self) -> Step:
        revision = self.scripts[self.next_index].revision
        return Step(f"upgrade {revision}", "upgrade", revision)

    def work(self, heads: tuple[str, ...], context: Any) -> Iterator[Any]:
        script_dir = self.run.runner.script
        tracker = self.run.tracker
        current = heads
        for index in range(self.start, self.stop):
            revision = self.scripts[index].revision
            self._begin(Step(f"upgrade {revision}", "upgrade", revision))
            yield from compat.upgrade_steps(script_dir, revision, current)
            flushed = self._commit(context)
            self._finish()
            self.next_index = index + 1
            before, current = current, _heads_after(self.scripts[index], current, context)
            exempt = self.run.rerun_exempt(self.scripts[index])
            if exempt is not None:
                with self.run.runner.uncaptured():
                    self.run.skip(f"re-run {revision}", "rerun", exempt, revision)
                if not self.owns:
                    return
                continue
            if not _linear(self.scripts[index], before, current):
                self.rerun_outside = (revision, before)  # a branch point or a merge:
                return  # re-run with a purged version table, in a command of its own
            once = tracker.sync(context.connection, flushed=flushed)
            step = self._begin(Step(f"re-run {revision}", "rerun", revision))
            if _direct(self.scripts[index], context):
                self.scripts[index].module.upgrade()
            else:
                yield from compat.stamp_steps(script_dir, before, current)
                yield from compat.upgrade_steps(script_dir, revision, before)
            flushed = self._commit(context)
            changed = differences(once, tracker.sync(context.connection, flushed=flushed))
            if changed:
                step.fail(f"revision {revision} is not idempotent: running it again changed "
                          f"the schema or data ({plural(len(changed), 'difference')})", changed)
            self._finish()
            if not self.owns:
                return  # env.py commits at its end: one revision per command

    def _commit(self, context: Any) -> bool:
        """Commit what ran so far and publish its row counters; False if we may not."""
        if self.owns is None:
            self.owns = compat.owns_transaction(context)
        if not self.owns:
            return False
        with context.autocommit_block():
            self.run.tracker.flush_stats(context.connection)
        return True


def _linear(script: Any, before: tuple[str, ...], after: tuple[str, ...]) -> bool:
    """One head before and after, the revision on top of it: stamping back is one step."""
    down = script.down_revision
    return (after == (script.revision,) and not isinstance(down, tuple | list)
            and before == ((down,) if down else ()))


def _heads_after(script: Any, before: tuple[str, ...], context: Any) -> tuple[str, ...]:
    """The heads after upgrading ``script`` from ``before``: known on a line, else read."""
    down = script.down_revision
    if not isinstance(down, tuple | list) and before == ((down,) if down else ()):
        return (script.revision,)
    return tuple(context.get_current_heads())


def _direct(script: Any, context: Any) -> bool:
    """Whether the re-run can call the revision's ``upgrade()`` itself, without version steps.

    Alembic binds ``op`` for the whole command, so between steps ``upgrade()`` runs as
    a step would; it must run inside a transaction Alembic began (one transaction for
    the command: ``autocommit_block`` began the next one), and take no arguments
    (env.py may pass some to ``run_migrations``; then the stamp-and-upgrade steps
    run it as Alembic does). Saves the two version-table updates of a stamp back.
    """
    if context.connection is None or not context.connection.in_transaction():
        return False
    try:
        params = inspect.signature(script.module.upgrade).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in params)
