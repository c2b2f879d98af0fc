"""Send literal SQL (which may hold ``%`` or ``:``) through SQLAlchemy to psycopg, verbatim.

With ``no_parameters`` SQLAlchemy calls ``cursor.execute(sql)`` with no parameters, so
neither SQLAlchemy nor psycopg reads ``%`` or ``:name`` as placeholders: nothing is
escaped, nothing is rewritten. ``text()`` is not used for such SQL because it parses binds.

Values go as bound parameters: a statement names one with :func:`param` (a marker
no SQL text can contain, since PostgreSQL rejects the NUL character), and
:func:`execute` turns the markers into psycopg placeholders and escapes every other
``%`` for that one call, so the literal SQL around them still reaches the server as
written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, CursorResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

    Rows = CursorResult[Unpack[tuple[Any, ...]]]

_MARK = "\x00"
_NAME = "[A-Za-z_][A-Za-z0-9_]*"
_MARKER = re.compile(f"\x00({_NAME})\x00")


def param(name: str) -> str:
    """A placeholder for the bound value ``name`` of a later :func:`execute`."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"bad parameter name {name!r}")
    return f"{_MARK}{name}{_MARK}"


def execute(conn: Connection, sql: str, params: Mapping[str, Any] | None = None) -> Rows:
    """Run ``sql`` as written; ``params`` fill the :func:`param` markers it holds."""
    used = set(_MARKER.findall(sql))
    if not used:
        return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
    missing = used - set(params or {})
    if missing:
        raise ValueError(f"no value for parameter(s) {', '.join(sorted(missing))}")
    driver_sql = _MARKER.sub(lambda m: f"%({m.group(1)})s", sql.replace("%", "%%"))
    values = {name: value for name, value in (params or {}).items() if name in used}
    return conn.exec_driver_sql(driver_sql, values)
