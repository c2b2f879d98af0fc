"""totals are never negative (written after the baseline: re-runnable)

Revision ID: 0006
"""

from alembic import op

import alembic_integrity  # noqa: F401  (op.ensure_*)

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.ensure_check_constraint("ck_orders_total_nonneg", "orders", "total_cents >= 0")


def downgrade() -> None:
    op.ensure_constraint_dropped("ck_orders_total_nonneg", "orders")
