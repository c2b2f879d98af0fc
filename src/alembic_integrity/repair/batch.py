"""What every batch of an applied repair shares: the connection, the log, the budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from .. import raw
from ..repairlog import LogTables
from ..settings import Settings


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

    def analyze(self) -> None:
        if self.logged > 1000 and self.logged >= 1.5 * self.analyzed_at:
            raw.execute(self.conn, f"ANALYZE {self.log.log_sql} "
                                   "(repair_id, schema_name, table_name, rule, pk)")
            self.analyzed_at = self.logged
