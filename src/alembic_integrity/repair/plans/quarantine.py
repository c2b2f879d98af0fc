"""Quarantine: a Delete that first copies the rows to an archive table."""

from __future__ import annotations

from ...pg.identifiers import TableName, quote, truncated_name
from ...rules.policies import Quarantine
from ..batch import Batch
from ..log import lit, run_short
from .base import table_privilege
from .delete import DeletePlan


class QuarantinePlan(DeletePlan):
    """Move rows to ``<table>_quarantine`` (same shape), deleting them from the table."""

    action = "quarantine"
    policy: Quarantine

    @property
    def cascade(self) -> bool:
        return False

    @property
    def archive(self) -> TableName:  # type: ignore[override]
        name = self.policy.archive or truncated_name(self.table.name, "_quarantine")
        return TableName(name, self.policy.archive_schema or self.table.schema)

    def privileges(self) -> list[tuple[str, str]]:
        archive = self.target.tables.find(self.archive)
        if archive is not None:
            return [*super().privileges(), table_privilege(archive, "INSERT")]
        schema = self.archive.schema or "public"
        return [*super().privileges(),
                (f"has_schema_privilege({lit(schema)}, 'CREATE')",
                 f"CREATE on schema {schema} (to create the archive {self.archive})")]

    def prepare(self, batch: Batch) -> bool:
        # LIKE copies columns and NOT NULL, not identity, defaults or generation
        # expressions: the archive keeps exactly the values the rows had.
        run_short(batch.conn, f"CREATE TABLE IF NOT EXISTS {self.archive.sql} "
                              f"(LIKE {self.table.sql})", batch.settings,
                  f"repair {self.target.rule_id}: creating {self.archive}")
        return super().prepare(batch)

    def extra_ctes(self) -> list[str]:
        """The rows deleted, copied to the archive by column name, values as they are."""
        columns = ", ".join(quote(c) for c in self.table.names)
        values = ", ".join(f"g.{quote(c)}" for c in self.table.names)
        return [f"ai_archived AS (INSERT INTO {self.archive.sql} ({columns}) "
                f"SELECT {values} FROM ai_gone g)"]
