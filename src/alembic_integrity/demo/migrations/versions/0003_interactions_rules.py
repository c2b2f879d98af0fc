"""Interaction rules (scenario 2): NOT NULL flags, reasons, staging names its fetch.

A NULL ``enabled`` or ``invalidated`` made a row vanish from every work
query (``enabled = TRUE AND invalidated = FALSE``); the flags keep their
server defaults (true / false) and become NOT NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

import alembic_integrity  # noqa: F401  (registers op.ensure_*)

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_NULL: list[tuple[str, str]] = [
    ("interactions", "enabled"),
    ("interactions", "invalidated"),
    ("postings_staging", "interaction_id"),
]

CHECKS: list[tuple[str, str, str]] = [
    (
        "ck_interactions_invalidation_reason",
        "interactions",
        "NOT invalidated OR invalidation_reason IS NOT NULL",
    ),
    (
        "ck_interactions_status_known",
        "interactions",
        "invalidated OR status IN ('pending', 'running', 'completed', 'failed')",
    ),
]

STAGING_FK = "fk_postings_staging_interaction_id_interactions"


def upgrade() -> None:
    for table, column in NOT_NULL:
        op.ensure_not_null(table, column)
    for name, table, condition in CHECKS:
        op.ensure_check_constraint(name, table, condition)
    op.ensure_foreign_key(
        STAGING_FK, "postings_staging", "interactions", ["interaction_id"], ["id"]
    )


def downgrade() -> None:
    op.ensure_constraint_dropped(STAGING_FK, "postings_staging")
    for name, table, _condition in reversed(CHECKS):
        op.ensure_constraint_dropped(name, table)
    for table, column in reversed(NOT_NULL):
        op.ensure_nullable(table, column)
