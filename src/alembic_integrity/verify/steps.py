"""The checks, in order: one head, the base schema, each revision upgraded and re-run, drift
at head, downgrade, upgrade again. Drift is checked at head before any downgrade, so a
broken downgrade never hides it; a failed re-run or drift stops nothing; a failed upgrade
ends the run there, leaving the database as it stopped for inspection."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, MetaData

from ..pg.ddl_log import SnapshotTracker
from ..pg.snapshot import SchemaSnapshot, differences
from .baseline import RerunPolicy
from .batch import DowngradeBatch, UpgradeBatch
from .data import DataLoader
from .drift import drift
from .failures import fail_from_exception
from .report import SKIPPED, Step, VerifyReport, capped, plural
from .runner import AlembicRunner, WrongDatabase

StepCallback = Callable[[Step], None]


@dataclass
class Options:
    strict: bool
    metadata: MetaData | None
    loader: DataLoader | None
    data_at: str | None
    data_label: str = "data"
    base: DataLoader | None = None  # builds what the project creates outside Alembic
    base_label: str = "base"
    rerun: RerunPolicy = field(default_factory=RerunPolicy)


class Run:
    """One verify run: the runner, an engine for snapshots, the report being filled."""

    def __init__(self, runner: AlembicRunner, engine: Engine, report: VerifyReport,
                 options: Options, progress: StepCallback | None) -> None:
        self.runner = runner
        self.engine = engine
        self.report = report
        self.options = options
        self.progress = progress
        self.empty: SchemaSnapshot | None = None
        self.at_head: SchemaSnapshot | None = None
        self.tracker = SnapshotTracker()
        self.tracker.uncounted = runner.version_tables  # the same set, filled as env.py runs
        self.stopped_because = ""

    # -- bookkeeping ---------------------------------------------------------------

    def step(self, step: Step, action: Callable[[Step], None]) -> bool:
        """Run ``action``; an exception fails the step with what PostgreSQL said."""
        started = time.perf_counter()
        try:
            action(step)
        except (WrongDatabase, KeyboardInterrupt):
            raise
        except Exception as exc:
            fail_from_exception(step, exc)
            step.output = self.runner.last_output
        step.seconds = time.perf_counter() - started
        self.add(step)
        return step.ok

    def add(self, step: Step) -> None:
        self.report.steps.append(step)
        if self.progress is not None:
            self.progress(step)

    def skip(self, name: str, kind: str, reason: str, revision: str | None = None) -> None:
        self.add(Step(name, kind, revision, status=SKIPPED, message=reason))

    def snapshot(self) -> SchemaSnapshot:
        """The schema now (with row counts), read where the DDL log says it changed."""
        with self.engine.connect() as conn:
            return self.tracker.sync(conn, flushed=False)

    def resync(self) -> None:
        """Read everything again: after a failure the log may not match what was rolled back."""
        with self.engine.connect() as conn:
            self.tracker.resync(conn)

    def rerun_exempt(self, script: Any) -> str | None:
        """Why this revision's re-run is not required (see :mod:`.baseline`), or None."""
        return self.options.rerun.not_required(script)

    def without_version_table(self, snapshot: SchemaSnapshot) -> SchemaSnapshot:
        return snapshot.without_tables(
            (schema, table) for schema, table in self.runner.version_tables)

    def load_data(self, revision: str) -> bool:
        loader = self.options.loader
        assert loader is not None

        def load(step: Step) -> None:
            with self.engine.begin() as conn:
                loader(conn)

        label = self.options.data_label
        return self.step(Step(f"load {label} at {revision}", "data", revision), load)

    # -- phases ----------------------------------------------------------------------

    def run(self) -> None:
        if not self.heads():
            return self.skip_rest("not run: the project needs exactly one head")
        with self.engine.connect() as conn:
            self.tracker.install(conn)
        try:
            self.phases()
        finally:
            with self.engine.connect() as conn:
                self.tracker.uninstall(conn)

    def phases(self) -> None:
        if self.options.base is not None and not self.build_base():
            return self.skip_rest("not run: the base schema could not be built")
        self.empty = self.snapshot()
        scripts = self.runner.revisions()
        if not self.upgrade_all(scripts):
            return self.skip_rest(self.stopped_because)
        self.at_head = self.snapshot()
        # Drift first: it needs only head, and must be reported whatever the downgrades do.
        self.step(Step("drift: models vs database", "drift"), self.check_drift)
        if not self.downgrade(scripts):
            return self.skip("upgrade base -> head again", "reupgrade",
                             "not run: the downgrade failed")
        self.step(Step("upgrade base -> head again", "reupgrade"), self.reupgrade)

    def upgrade_all(self, scripts: list[Any]) -> bool:
        """Every revision upgraded and re-run, in as few env.py runs as possible.

        A batch ends at the end, after the revision the data set is loaded at, or at
        a failure; a failed re-run is recorded and the next batch goes on from there.
        """
        self.stopped_because = ""
        index = 0
        while index < len(scripts):
            stop = next((i + 1 for i in range(index, len(scripts))
                         if scripts[i].revision == self.options.data_at), len(scripts))
            batch = UpgradeBatch(self, scripts, index, stop)
            failed = self.run_batch(batch)
            if failed is not None and failed.kind == "upgrade":
                self.stopped_because = f"not run: revision {failed.revision} failed to upgrade"
                for later in scripts[batch.next_index + 1:]:
                    self.skip(f"upgrade {later.revision}", "upgrade", self.stopped_because,
                              later.revision)
                return False
            if failed is not None:
                self.restore(failed.revision or "", batch.owns is not False)
            elif batch.rerun_outside is not None:
                self.rerun_alone(*batch.rerun_outside)
            index = batch.next_index
            done = scripts[index - 1].revision if index else None
            if done is not None and done == self.options.data_at and index == stop:
                if not self.load_data(done):
                    self.stopped_because = f"not run: loading data at {done} failed"
                    for later in scripts[index:]:
                        self.skip(f"upgrade {later.revision}", "upgrade", self.stopped_because,
                                  later.revision)
                    return False
                self.resync()
        return True

    def run_batch(self, batch: UpgradeBatch | DowngradeBatch) -> Step | None:
        """Run one batch; the step that failed, already in the report, or None."""
        try:
            self.runner.run_steps(batch.work)
            return None
        except (WrongDatabase, KeyboardInterrupt):
            raise
        except Exception as exc:
            step = batch.pending
            if step is None:  # env.py failed before any revision ran
                step = batch.first_step()
            step.seconds = time.perf_counter() - batch.began if batch.began else 0.0
            fail_from_exception(step, exc)
            step.output = self.runner.last_output
            self.add(step)
            self.resync()
            return step

    def skip_rest(self, reason: str) -> None:
        """Everything after a failed upgrade needs head: drift, the downgrades, the re-upgrade."""
        self.skip("drift: models vs database", "drift", reason)
        self.skip("downgrade to base", "downgrade", reason)
        self.skip("upgrade base -> head again", "reupgrade", reason)

    def build_base(self) -> bool:
        """Run the base schema loader on the empty database, before the first revision."""
        base = self.options.base
        assert base is not None

        def build(step: Step) -> None:
            with self.engine.begin() as conn:
                base(conn)

        return self.step(Step(f"base schema: {self.options.base_label}", "base"), build)

    def heads(self) -> bool:
        heads = self.runner.heads()
        self.report.heads = heads
        self.report.revisions = [s.revision for s in self.runner.revisions()]
        step = Step("single head", "heads")
        if not heads:
            step.fail(f"no revisions in {self.runner.script.dir}")
        elif len(heads) > 1:
            step.fail(f"{len(heads)} heads: {', '.join(heads)}; merge them with: "
                      f"alembic merge -m \"merge heads\" {' '.join(heads)}")
        self.add(step)
        return step.ok

    def rerun_alone(self, revision: str, before: tuple[str, ...]) -> None:
        self.step(Step(f"re-run {revision}", "rerun", revision),
                  lambda step: self.rerun(step, revision, before))

    def rerun(self, step: Step, revision: str, before: tuple[str, ...]) -> None:
        """The re-run in a command of its own (branch points, merges): slower, same check."""
        once = self.snapshot()
        try:
            self.runner.rerun(revision, before)  # as if the revision had never been recorded
        except Exception:
            output = self.runner.last_output
            self.restore(revision, committed=True)
            self.runner.last_output = output  # the failed run's, for the report
            raise
        changed = differences(once, self.snapshot())
        if changed:
            step.fail(f"revision {revision} is not idempotent: running it again changed "
                      f"the schema or data ({plural(len(changed), 'difference')})", changed)

    def restore(self, revision: str, committed: bool) -> None:
        """After a failed re-run, have the revision applied and recorded again (once).

        When the first run was committed (as after every revision of a batch) only
        the version table may lack it; otherwise the whole batch was rolled back.
        """
        with contextlib.suppress(Exception):
            if revision not in self.runner.current():
                if committed:
                    self.runner.stamp(revision)
                else:
                    self.runner.upgrade(revision)
        self.resync()

    def downgrade(self, scripts: list[Any]) -> bool:
        """Each revision's downgrade on its own (linear history), else one downgrade to base."""
        if self.runner.is_linear():
            plan = [(f"downgrade {s.revision}", s.revision, s.down_revision or "base")
                    for s in reversed(scripts)]
        else:
            plan = [("downgrade to base", None, "base")]
        return self.run_batch(DowngradeBatch(self, plan)) is None

    def leftovers(self, conn: Connection) -> list[str]:
        """What the downgrades left behind: reported, not fatal (it may be on purpose)."""
        assert self.empty is not None
        now = self.tracker.sync(conn, flushed=False)
        left = differences(self.without_version_table(self.empty),
                           self.without_version_table(now), oids=False, rows=False)
        return capped([f"left after downgrade to base: {line}" for line in left])

    def reupgrade(self, step: Step) -> None:
        data_at = self.options.data_at
        if data_at is not None:
            self.runner.upgrade(data_at)
            with self.engine.begin() as conn:
                assert self.options.loader is not None
                self.options.loader(conn)
        self.runner.upgrade("heads")
        assert self.at_head is not None
        changed = differences(self.at_head, self.snapshot(), oids=False, rows=False)
        if changed:
            step.fail("upgrade -> downgrade -> upgrade does not rebuild the schema the first "
                      "upgrade built", changed)

    def check_drift(self, step: Step) -> None:
        metadata = self.options.metadata
        if metadata is None:
            step.status = SKIPPED
            step.message = "drift not checked (skip_drift)"
            return
        with self.engine.connect() as conn:
            found = drift(conn, metadata)
        step.warnings.extend(found.unchecked)
        if found.missing or (found.extra and self.options.strict):
            extra = found.extra if self.options.strict else []
            step.fail(f"the database differs from the models: {len(found.missing)} declared "
                      f"rule(s) not in place" + (f", {len(extra)} extra" if extra else ""),
                      found.missing + extra)
        if not self.options.strict:
            step.warnings.extend(f"extra (not fatal without --strict): {line}"
                                 for line in found.extra)
