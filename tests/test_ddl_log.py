"""The DDL-log snapshot tracker agrees with a full snapshot after every kind of change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, create_engine, text

from alembic_integrity.pg import raw
from alembic_integrity.pg.ddl_log import SnapshotTracker
from alembic_integrity.pg.snapshot import differences, take

CHANGES = [
    "CREATE TABLE parent (id serial PRIMARY KEY, name text)",
    "CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), qty int)",
    "INSERT INTO parent (name) SELECT 'p' || g FROM generate_series(1, 3) g",
    "INSERT INTO child SELECT g, 1, g FROM generate_series(1, 5) g",
    "ALTER TABLE child ADD CONSTRAINT ck_qty CHECK (qty >= 0) NOT VALID",
    "ALTER TABLE child VALIDATE CONSTRAINT ck_qty",
    "CREATE INDEX ix_child_qty ON child (qty)",
    "ALTER TABLE parent RENAME TO mother",  # child's FK definition names it
    "ALTER TABLE mother RENAME COLUMN id TO mother_id",
    "DROP INDEX ix_child_qty",
    "ALTER TABLE child DROP CONSTRAINT ck_qty",
    "ALTER TABLE child ALTER COLUMN qty SET NOT NULL",
    "ALTER TABLE child ADD COLUMN note text DEFAULT 'x'",
    "DELETE FROM child WHERE id > 3",
    "UPDATE child SET qty = qty + 1",
    "CREATE TYPE mood AS ENUM ('ok')",
    "ALTER TYPE mood ADD VALUE 'sad'",
    "CREATE SCHEMA side",
    "CREATE TABLE side.t (id int)",
    "CREATE VIEW v AS SELECT id FROM child",
    "DROP TABLE child CASCADE",
    "TRUNCATE mother",
    "DROP SCHEMA side CASCADE",
]


@pytest.fixture
def conns(integrity_database_url: str) -> Iterator[tuple[Connection, Connection]]:
    engine = create_engine(integrity_database_url)
    with engine.connect() as reader, engine.connect() as writer:
        yield reader, writer
    engine.dispose()


def test_each_change_is_seen_without_reading_everything(
        conns: tuple[Connection, Connection]) -> None:
    reader, writer = conns
    tracker = SnapshotTracker()
    tracker.install(reader)
    assert tracker.logging and tracker.full_reads == 1
    for sql in CHANGES:
        with writer.begin():
            raw.execute(writer, sql)
        auto = writer.execution_options(isolation_level="AUTOCOMMIT")
        tracker.flush_stats(auto)
        auto.commit()
        writer.execution_options(isolation_level="READ COMMITTED")
        state = tracker.sync(reader, flushed=True)
        full = take(reader, count_rows=True)
        assert differences(full, state) == [], sql
    assert tracker.full_reads == 1  # every change was mapped through the log
    tracker.uninstall(reader)
    with reader.begin():
        assert reader.execute(text(
            "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'alembic_integrity%'"
        )).scalar() == 0


def test_rolled_back_ddl_leaves_no_log(conns: tuple[Connection, Connection]) -> None:
    reader, writer = conns
    tracker = SnapshotTracker()
    tracker.install(reader)
    with writer.begin() as tx:
        raw.execute(writer, "CREATE TABLE gone (id int)")
        tx.rollback()
    assert ("public", "gone") not in tracker.sync(reader, flushed=True).relations
    assert differences(take(reader, count_rows=True), tracker.state) == []  # type: ignore[arg-type]
    tracker.uninstall(reader)
