"""What every batch of an applied repair shares: the connection, the log, the budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from ..pg import raw
from ..settings import Settings
from .log import CHANGE_ACTIONS, LogTables, run_short


@dataclass(frozen=True)
class RepairProgress:
    """Reported after every batch: the rule, the policy, and its rows so far."""

    rule: str
    policy: str
    changed: int
    noted: int


Progress = Callable[[RepairProgress], None]


@dataclass
class Batch:
    """What one apply step needs: the connection, the log, the repair, the budget."""

    conn: Connection
    log: LogTables
    repair_id: int
    size: int
    settings: Settings
    progress: Progress | None
    resumed: bool = False
    logged: int = 0
    analyzed_at: int = 0
    guarded: bool = False
    still: int = 0
    indexed: bool = False
    tally: dict[tuple[str, int, str], int] = field(default_factory=dict)
    untallied: set[str] = field(default_factory=set)

    def start_rule(self) -> None:
        """Before each rule: guard only a resumed run, until the rule shows it needs it."""
        self.guarded = self.resumed
        self.still = 0

    def wrote(self, rows: int) -> None:
        """Count log rows written; ANALYZE the log whenever it has grown by half.

        Only while rows are looked up in the log (the guard): a log filled
        faster than autovacuum notices keeps the planner's "never analyzed: 10
        pages" guess, and a nested loop over the whole log per row turns
        seconds into minutes. A handful of ANALYZEs of the key columns (the
        jsonb images are not sampled) keep the plans right.
        """
        self.logged += rows
        if self.guarded:
            self.analyze()

    def count(self, rule: str, index: int, actions: Mapping[str, int]) -> None:
        """Log rows one batch wrote for a rule's policy, by action."""
        for action, rows in actions.items():
            key = (rule, index, action)
            self.tally[key] = self.tally.get(key, 0) + rows

    def tallied(self, rule: str) -> list[tuple[Any, ...]] | None:
        """The rule's log rows as the summary reads them, when the batches' counts tell all.

        They do for a new repair whose rows were all changes: the log holds
        just what the batches counted, and changes have no note or sample.
        Otherwise (resumed, or rows left with a reason) None: read the log.
        """
        rows = [(index, action, None, count, None, None)
                for (r, index, action), count in sorted(self.tally.items()) if r == rule]
        if self.resumed or rule in self.untallied \
                or any(action not in CHANGE_ACTIONS for _, action, *_ in rows):
            return None
        return rows

    def index_log(self) -> None:
        """Before the first look-up of rows in the log: its hash index on ``pk``."""
        if not self.indexed:
            run_short(self.conn, self.log.index_sql(), self.settings,
                      f"indexing the repair log {self.log.label}")
            self.indexed = True

    def analyze(self) -> None:
        if self.logged > 1000 and self.logged >= 1.5 * self.analyzed_at:
            raw.execute(self.conn, f"ANALYZE {self.log.log_sql} "
                                   "(repair_id, schema_name, table_name, rule, pk)")
            self.analyzed_at = self.logged
