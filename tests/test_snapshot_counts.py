"""verify's row counts need no libxml and write nothing: plain count(*) in one UNION ALL.

On a server built without libxml (the 13, 16 and 18 of .ci/test) the whole suite shows
it; here, on every major, the counts are read by a read-only role that may not call
any XML function at all, from tables whose names need quoting.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from alembic_integrity.pg import snapshot
from conftest import sql


def test_row_counts_without_xml_functions_for_a_read_only_role(engine: Engine) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    sql(engine, 'CREATE SCHEMA "Odd % schema"')
    sql(engine, 'CREATE TABLE "Odd % schema"."It\'s: a table" (id int)')
    sql(engine, 'INSERT INTO "Odd % schema"."It\'s: a table" SELECT generate_series(1, 7)')
    sql(engine, "CREATE TABLE plain (id int)")
    sql(engine, "CREATE TABLE parted (id int) PARTITION BY RANGE (id)")
    sql(engine, "CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (10)")
    sql(engine, "INSERT INTO parted VALUES (1), (2), (3)")
    sql(engine, f"CREATE ROLE {role} LOGIN")
    try:
        sql(engine, f'GRANT USAGE ON SCHEMA "Odd % schema" TO {role}')
        sql(engine, f'GRANT SELECT ON ALL TABLES IN SCHEMA "Odd % schema", public TO {role}')
        for function in ("query_to_xml(text, boolean, boolean, text)",
                         "xpath(text, xml, text[])", "xpath(text, xml)"):
            sql(engine, f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
        url = engine.url.set(username=role)
        reader = sa.create_engine(url, poolclass=NullPool,
                                  connect_args={"options": "-c default_transaction_read_only=on"})
        try:
            with reader.connect() as conn:
                xml_refused = _refused(conn, "SELECT query_to_xml('SELECT 1', false, true, '')")
            with reader.connect() as conn:
                counts = snapshot.take(conn, count_rows=True).rows
        finally:
            reader.dispose()
    finally:
        sql(engine, f'REVOKE ALL ON ALL TABLES IN SCHEMA "Odd % schema", public FROM {role}')
        sql(engine, f'REVOKE ALL ON SCHEMA "Odd % schema" FROM {role}')
        sql(engine, f"DROP ROLE {role}")
    assert xml_refused
    assert counts == {
        ("Odd % schema", "It's: a table"): 7,
        ("public", "plain"): 0,
        ("public", "parted"): 3,
        ("public", "parted_low"): 3,
    }


def test_row_counts_of_many_tables_in_chunks(engine: Engine) -> None:
    """More tables than one UNION ALL statement takes: every one counted once."""
    tables = 503  # more than one UNION ALL statement takes (500)
    sql(engine, f"DO $$ BEGIN FOR i IN 1..{tables} LOOP EXECUTE format("
                "'CREATE TABLE t%s AS SELECT generate_series(1, %s) AS n', i, i % 5); "
                "END LOOP; END $$")
    with engine.connect() as conn:
        counts = snapshot.take(conn, count_rows=True).rows
    assert counts == {("public", f"t{i}"): i % 5 for i in range(1, tables + 1)}


def _refused(conn: sa.Connection, statement: str) -> bool:
    try:
        conn.execute(sa.text(statement))
    except sa.exc.ProgrammingError as exc:
        return "permission denied" in str(exc)
    return False
