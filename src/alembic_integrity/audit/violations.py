"""Which rows break a rule: counted, sampled, and explained to a person."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from ..errors import ValidationFailed
from ..pg import catalog, raw
from ..pg.identifiers import quote
from ..rules.kinds import Rule

SAMPLE = 10


def key_expression(conn: Connection, rule: Rule, alias: str = "t") -> tuple[str, list[str]]:
    """The primary key to show for a row (``ctid`` when the table has none)."""
    oid = catalog.require_table(conn, rule.table, f"rule {rule.label}")
    columns = catalog.primary_key(conn, oid)
    if not columns:
        return f"{alias}.ctid::text", ["ctid"]
    if len(columns) == 1:
        return f"{alias}.{quote(columns[0])}", columns
    return "(" + ", ".join(f"{alias}.{quote(c)}" for c in columns) + ")::text", columns


def count_and_sample(conn: Connection, rule: Rule, limit: int = SAMPLE) -> tuple[int, list[Any]]:
    key, _ = key_expression(conn, rule)
    where = rule.violation_sql("t")
    source = f"{rule.table.sql} AS t"
    count = raw.execute(conn, f"SELECT count(*) FROM {source} WHERE {where}").scalar_one()
    sample = [
        row[0]
        for row in raw.execute(conn,
            f"SELECT {key} FROM {source} WHERE {where} ORDER BY 1 LIMIT {int(limit)}"
        )
    ]
    return int(count), sample


def finding_query(rule: Rule) -> str:
    return f"SELECT * FROM {rule.table.sql} AS t WHERE {rule.violation_sql('t')}"


def validation_failure(conn: Connection, rule: Rule) -> ValidationFailed:
    count, sample = count_and_sample(conn, rule)
    keys = ", ".join(str(k) for k in sample) + (", ..." if count > len(sample) else "")
    return ValidationFailed(
        f"VALIDATE failed for {rule.label} on {rule.table}: {count} row(s) violate it "
        f"(primary keys: {keys}). The constraint stays NOT VALID, so new writes are already "
        f"checked. Find them with: {finding_query(rule)}; fix them (alembic-integrity "
        "repair --apply, or by hand), then run the upgrade again",
        constraint=rule.name, table=str(rule.table), count=count, sample=sample,
    )
