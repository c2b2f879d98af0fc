"""What a deploy pipeline runs before ``alembic upgrade head``: audit, then repair.

The answer it gives is narrow on purpose: would any VALIDATE of a declared
CHECK, NOT NULL or foreign key fail on the rows as they are now? Audit-only
expectations are repaired and reported too, but never block a deploy.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from ..pg.progress import ProgressCallback
from ..repair import RepairResult, repair
from ..repair.log import DEFAULT_LOG_TABLE
from ..rules.metadata import DeclaredRules
from .core import AuditReport, Finding, audit

BLOCKING_KINDS = frozenset({"check", "not_null", "foreign_key"})


@dataclass
class PreflightResult:
    before: AuditReport
    repaired: RepairResult | None = None
    after: AuditReport | None = None

    @property
    def final(self) -> AuditReport:
        return self.after or self.before

    @property
    def blocking(self) -> list[Finding]:
        """Rules whose VALIDATE would fail now."""
        return [f for f in self.final.findings
                if f.rule.kind in BLOCKING_KINDS and f.violations > 0]

    @property
    def exit_code(self) -> int:
        """2: a rule could not be checked; 1: a VALIDATE would fail; 0: safe to migrate."""
        if self.final.problems:
            return 2
        return 1 if self.blocking else 0


def preflight(engine: Engine, declared: DeclaredRules, *, apply_repair: bool = False,
              batch_size: int = 10_000, log_table: str = DEFAULT_LOG_TABLE, sample: int = 5,
              statement_timeout_ms: int | None = None,
              progress: ProgressCallback | None = None) -> PreflightResult:
    """Audit; with ``apply_repair``, repair what the policies allow and audit again."""
    before = audit(engine, declared, sample=sample, statement_timeout_ms=statement_timeout_ms,
                   progress=progress)
    result = PreflightResult(before)
    if not apply_repair or before.violations_total == 0:
        return result
    result.repaired = repair(engine, declared, apply=True, batch_size=batch_size,
                             log_table=log_table)
    result.after = audit(engine, declared, sample=sample,
                         statement_timeout_ms=statement_timeout_ms, progress=progress)
    return result
