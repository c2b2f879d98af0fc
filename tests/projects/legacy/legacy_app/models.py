"""The models today. env.py does not import them: verify gets --metadata."""

import sqlalchemy as sa

metadata = sa.MetaData()

author = sa.Table(
    "author", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
)
book = sa.Table(
    "book", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(200)),
    sa.Column("author_id", sa.Integer, sa.ForeignKey("author.id", name="fk_book_author")),
    sa.Column("isbn", sa.String(20)),
    sa.Index("ix_book_isbn", "isbn"),
)
