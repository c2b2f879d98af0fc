"""orders and their lines; the foreign keys have no name

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
    )
    op.create_table(
        "order_line",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("product_id", sa.Integer, sa.ForeignKey("product.id"), nullable=False),
        sa.Column("qty", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("order_line")
    op.drop_table("orders")
