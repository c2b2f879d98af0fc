"""Batch bookkeeping rules (scenario 4): keys and in-flight records belong to a batch.

Counts never go negative and every logged failure says why, so the run
report can be trusted. Deleting a batch takes its keys and in-flight records
with it (ON DELETE CASCADE); failure logs outlive their batch on purpose.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

import alembic_integrity  # noqa: F401  (registers op.ensure_*)

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (name, source table): each points batch_id at active_batches.id.
BATCH_FKS: list[tuple[str, str]] = [
    ("fk_batch_record_keys_batch_id_active_batches", "batch_record_keys"),
    ("fk_inflight_records_batch_id_active_batches", "inflight_records"),
]

COUNT_CHECK = "ck_failure_counts_count_nonnegative"


def upgrade() -> None:
    for name, table in BATCH_FKS:
        op.ensure_foreign_key(
            name, table, "active_batches", ["batch_id"], ["id"], ondelete="CASCADE"
        )
    op.ensure_check_constraint(COUNT_CHECK, "failure_counts", "count >= 0")
    op.ensure_not_null("failure_logs", "reason")


def downgrade() -> None:
    op.ensure_nullable("failure_logs", "reason")
    op.ensure_constraint_dropped(COUNT_CHECK, "failure_counts")
    for name, table in reversed(BATCH_FKS):
        op.ensure_constraint_dropped(name, table)
