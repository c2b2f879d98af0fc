"""every book has a known author; authors have names

Revision ID: 0002
"""

from alembic import op

import alembic_integrity  # noqa: F401  (op.ensure_*)

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE author SET name = '(unknown)' WHERE name IS NULL")
    op.ensure_not_null("author", "name")
    op.ensure_foreign_key("fk_book_author", "book", "author", ["author_id"], ["id"])


def downgrade() -> None:
    op.ensure_constraint_dropped("fk_book_author", "book")
    op.ensure_nullable("author", "name")
