"""Send literal SQL (which may hold ``%`` or ``:``) through SQLAlchemy to psycopg, verbatim.

With ``no_parameters`` SQLAlchemy calls ``cursor.execute(sql)`` with no parameters, so
neither SQLAlchemy nor psycopg reads ``%`` or ``:name`` as placeholders: nothing is
escaped, nothing is rewritten. ``text()`` is not used for such SQL because it parses binds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, CursorResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    Rows = CursorResult[Unpack[tuple[Any, ...]]]


def execute(conn: Connection, sql: str) -> Rows:
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
