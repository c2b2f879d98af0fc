"""customers and products, with their enum types

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

product_status = postgresql.ENUM("draft", "active", "retired", name="product_status",
                                 create_type=False)


def upgrade() -> None:
    # customer_tier is created by create_table itself; product_status explicitly.
    op.create_table(
        "customer",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200), nullable=False, unique=True),
        sa.Column("tier", sa.Enum("basic", "gold", name="customer_tier"), nullable=False,
                  server_default="basic"),
    )
    product_status.create(op.get_bind(), checkfirst=True)
    op.create_table(
        "product",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sku", sa.String(40), nullable=False, unique=True),
        sa.Column("status", product_status, nullable=False, server_default="draft"),
    )


def downgrade() -> None:
    op.drop_table("product")
    product_status.drop(op.get_bind(), checkfirst=True)
    op.drop_table("customer")
    sa.Enum(name="customer_tier").drop(op.get_bind(), checkfirst=True)
