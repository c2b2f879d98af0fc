"""accounts

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.Text), if_not_exists=True)


def downgrade() -> None:
    op.drop_table("account", if_exists=True)
