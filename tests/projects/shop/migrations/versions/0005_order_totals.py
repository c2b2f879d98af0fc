"""order totals, backfilled with raw SQL

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("total_cents", sa.Integer, nullable=True))
    op.execute("""
        UPDATE orders o
           SET total_cents = coalesce((SELECT sum(l.qty * p.price_cents)
                                         FROM order_line l JOIN product p ON p.id = l.product_id
                                        WHERE l.order_id = o.id), 0)
    """)
    op.alter_column("orders", "total_cents", nullable=False)


def downgrade() -> None:
    op.drop_column("orders", "total_cents")
