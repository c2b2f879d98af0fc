"""accounts can be closed; the downgrade names a column that never existed

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("account", sa.Column("closed_at", sa.DateTime(timezone=True)),
                  if_not_exists=True)


def downgrade() -> None:
    op.drop_column("account", "closed_on")  # the bug: closed_at
