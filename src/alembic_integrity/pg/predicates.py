"""Predicates as PostgreSQL normalises them, read without writing anything.

Two CHECK predicates are "the same" when PostgreSQL parses them to the same
expression: ``qty>0`` and ``(qty > 0)`` are equal, ``qty > 0`` and
``qty >= 1`` are not. To see the parsed form without creating a scratch table
(which a hot standby and a read-only role refuse), each predicate is put in
the target list of a query over a one-row relation with the table's row type,
``SELECT (<predicate>) IS NOT FALSE FROM (SELECT (NULL::<table>).* OFFSET 0)``,
and ``EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON)`` prints it back through
PostgreSQL's own deparser. Nothing runs, nothing is written, and the table is
never scanned (only its row type is read, which takes no lock that outlives
the lookup).

Why this shape: in the target list the planner cannot turn the predicate into
an index condition, a partition-pruning test or a constraint-exclusion proof,
so the printed text depends on the expression alone; ``OFFSET 0`` keeps the
NULL row from being folded into constants; ``IS NOT FALSE`` is a CHECK's own
acceptance test and makes a non-boolean predicate an error. Both sides of a
comparison (the wanted text and the live ``pg_get_expr``) go through the very
same path, so only the equality of the printed forms matters.

Many predicates are normalised in one statement (a ``UNION ALL`` with one
branch per predicate, :data:`CHUNK` at a time); if it fails, each is tried
alone so that one bad predicate is one error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from . import raw
from .identifiers import TableName

_WRAPPER_TAIL = " IS NOT FALSE)"


@dataclass(frozen=True)
class Normalized:
    """A predicate's parsed form, or PostgreSQL's error for it."""

    text: str | None
    error: DBAPIError | None = None

    @property
    def shown(self) -> str:
        """The parsed predicate without the ``IS NOT FALSE`` wrapper, for messages."""
        value = self.text or ""
        if value.startswith("(") and value.endswith(_WRAPPER_TAIL):
            return value[1:-len(_WRAPPER_TAIL)]
        return value


def normalize(conn: Connection, items: Sequence[tuple[TableName, str]]) -> list[Normalized]:
    """The normalised form of each ``(table, predicate)``, in order; never raises for one."""
    found: list[Normalized] = []
    for start in range(0, len(items), CHUNK):
        found += _normalize_chunk(conn, items[start:start + CHUNK])
    return found


CHUNK = 64
"""Predicates per statement: planning a UNION ALL grows faster than its branch count."""


def _normalize_chunk(conn: Connection, items: Sequence[tuple[TableName, str]]
                     ) -> list[Normalized]:
    try:
        return _normalize_all(conn, items)
    except DBAPIError as err:
        if len(items) == 1:
            return [Normalized(None, err)]
    found = []
    for item in items:
        try:
            found.extend(_normalize_all(conn, [item]))
        except DBAPIError as err:
            found.append(Normalized(None, err))
    return found


def _alias(index: int) -> str:
    return f"ai_pred_{index}"


def _normalize_all(conn: Connection, items: Sequence[tuple[TableName, str]]) -> list[Normalized]:
    branches = [
        f"SELECT CAST('{_alias(i)}' AS text) AS k, ({predicate}) IS NOT FALSE AS v "
        f"FROM (SELECT (CAST(NULL AS {table.sql})).* OFFSET 0) AS {_alias(i)}"
        for i, (table, predicate) in enumerate(items)
    ]
    statement = "EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) " + " UNION ALL ".join(branches)
    savepoint = conn.begin_nested()
    try:
        document = raw.execute(conn, statement).scalar_one()
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    plan = json.loads(document) if isinstance(document, str) else document
    outputs = dict(_outputs(plan))
    found = []
    for i in range(len(items)):
        printed = outputs.get(f"'{_alias(i)}'::text")
        if printed is None:
            raise RuntimeError(f"EXPLAIN printed no output for predicate {i}: {document!r}")
        found.append(Normalized(printed.replace(f"{_alias(i)}.", "")))
    return found


def _outputs(node: Any) -> Iterator[tuple[str, str]]:
    """(key literal, predicate) from every plan node whose output starts with our key."""
    if isinstance(node, list):
        for child in node:
            yield from _outputs(child)
        return
    if not isinstance(node, dict):
        return
    output = node.get("Output")
    if isinstance(output, list) and len(output) == 2 and str(output[0]).startswith("'ai_pred_"):
        yield str(output[0]), str(output[1])
    for key in ("Plan", "Plans"):
        if key in node:
            yield from _outputs(node[key])
