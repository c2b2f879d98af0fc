"""What every batch of an applied repair shares: the connection, the log, the budget."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..pg import raw
from ..pg.progress import Progress, ProgressCallback
from ..settings import Settings
from .log import CHANGE_ACTIONS, LogTables, lit, run_short


@dataclass
class Batch:
    """What one apply step needs: the connection, the log, the repair, the budget."""

    conn: Connection
    log: LogTables
    repair_id: int
    size: int
    settings: Settings
    progress: ProgressCallback | None
    resumed: bool = False
    total: int | None = None
    done: int = 0
    still: int = 0
    skipped: int = 0
    indexed: bool = False
    started: float = field(default_factory=time.monotonic)
    tally: dict[tuple[str, int, str], int] = field(default_factory=dict)
    untallied: set[str] = field(default_factory=set)
    _rule_counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def start_rule(self) -> None:
        """Before each rule: nothing seen yet that the summary would have to recount."""
        self.still = 0
        self.skipped = 0

    def count(self, rule: str, index: int, actions: Mapping[str, int]) -> None:
        """Log rows one batch wrote for a rule's policy, by action."""
        for action, rows in actions.items():
            key = (rule, index, action)
            self.tally[key] = self.tally.get(key, 0) + rows

    def advance(self, rule: str, policy: str, changed: int, noted: int) -> None:
        """After a batch: add its rows and tell the progress callback."""
        before_changed, before_noted = self._rule_counts.get(f"{rule}\0{policy}", (0, 0))
        changed += before_changed
        noted += before_noted
        self.done += changed - before_changed + noted - before_noted
        self._rule_counts[f"{rule}\0{policy}"] = (changed, noted)
        if self.progress is not None:
            elapsed = max(time.monotonic() - self.started, 1e-6)
            self.progress(Progress(f"{rule}: {policy}", self.done, self.total,
                                   self.done / elapsed))

    def tallied(self, rule: str) -> list[tuple[Any, ...]] | None:
        """The rule's log rows as the summary reads them, when the batches' counts tell all.

        They do for a new repair whose rows were all changes: the log holds
        just what the batches counted, and changes have no note or sample.
        Otherwise (resumed, or rows left with a reason) None: read the log.
        """
        rows = [(index, action, None, count, None, None)
                for (r, index, action), count in sorted(self.tally.items()) if r == rule]
        if self.resumed or rule in self.untallied \
                or any(action not in CHANGE_ACTIONS and count for _, action, _, count, *_
                       in rows):
            return None
        return [r for r in rows if r[3]]

    def cursor(self, rule: str, index: int) -> str | None:
        """Where a resumed run starts a policy: the last cursor its batches logged."""
        if not self.resumed:
            return None
        found = raw.execute(self.conn,
            f"SELECT cursor::text FROM {self.log.log_sql} WHERE repair_id = "
            f"{int(self.repair_id)} AND rule = {lit(rule)} AND policy_index = {int(index)} "
            "AND cursor IS NOT NULL ORDER BY log_id DESC LIMIT 1").scalar()
        return None if found is None else str(found)

    def index_log(self) -> None:
        """Before the first look-up of noted rows in the log: its hash index on ``pk``."""
        if not self.indexed:
            run_short(self.conn, self.log.index_sql(), self.settings,
                      f"indexing the repair log {self.log.label}")
            self.indexed = True

    def analyze(self) -> None:
        """Fresh statistics of the log, before a resumed run's or a summary's look-ups:
        a log filled faster than autovacuum notices is planned as a few rows."""
        raw.execute(self.conn, f"ANALYZE {self.log.log_sql}")
