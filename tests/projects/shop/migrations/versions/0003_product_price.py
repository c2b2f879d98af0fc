"""product price, added in batch mode (the project once ran on SQLite)

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.add_column(sa.Column("price_cents", sa.Integer, nullable=True))
        batch.create_index("ix_product_price_cents", ["price_cents"])


def downgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.drop_index("ix_product_price_cents")
        batch.drop_column("price_cents")
