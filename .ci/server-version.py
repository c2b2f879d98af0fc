"""Print the version of the server at $DATABASE_URL and whether it was built with libxml.

Run by .ci/test through ``alembic-integrity throwaway``, so each major's line in CI's
output comes from the server itself (``SELECT version()``), not from a file name.
"""

import os

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

engine = sa.create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
with engine.connect() as conn:
    version = conn.execute(sa.text("SELECT version()")).scalar_one()
    try:
        conn.execute(sa.text("SELECT xmlparse(content '<a/>')"))
        libxml = "yes"
    except sa.exc.DBAPIError:
        libxml = "no"
engine.dispose()
print(f"server: {version}; libxml: {libxml}")
