"""Send literal SQL (which may hold ``%`` or ``:``) through SQLAlchemy to psycopg.

``exec_driver_sql`` hands psycopg an empty parameter mapping, so psycopg reads
``%`` as a placeholder; doubling it is the one escape that always applies.
``text()`` is not used for user SQL because it reads ``:name`` as a bind.
"""

from __future__ import annotations

from sqlalchemy import Connection, CursorResult


def execute(conn: Connection, sql: str) -> CursorResult:
    return conn.exec_driver_sql(sql.replace("%", "%%"))
