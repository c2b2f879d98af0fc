"""Lock behaviour: retries under a held lock, and writers during VALIDATE."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine

from alembic_integrity.errors import LockRetriesExhausted, ValidationFailed
from conftest import constraint_row, run_ops, sql

FAST = {"lock_timeout": "100ms", "backoff": "50ms", "backoff_max": "200ms"}


@pytest.fixture
def items(engine: Engine) -> Engine:
    sql(engine, """
        CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, qty integer);
        INSERT INTO items (qty) SELECT g FROM generate_series(1, 3000) g;
    """)
    return engine


def hold_lock(engine: Engine, mode: str, seconds: float, held: threading.Event) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(f"LOCK TABLE items IN {mode} MODE")
        held.set()
        time.sleep(seconds)
        conn.rollback()


def test_retries_until_a_held_lock_is_released(items: Engine) -> None:
    held = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(items, "ACCESS SHARE", 1.2, held))
    holder.start()
    held.wait(5)
    try:
        outcome = run_ops(items, lambda op: op.ensure_check_constraint(
            "ck_items_qty", "items", "qty > 0", retries=40, **FAST))
    finally:
        holder.join()
    assert outcome.attempts > 2  # first ADD attempts timed out, then it went through
    assert constraint_row(items, "items", "ck_items_qty")[1] is True


def test_too_few_retries_fail_clearly_and_leave_nothing(items: Engine) -> None:
    held = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(items, "ACCESS SHARE", 2.0, held))
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(LockRetriesExhausted, match=r"lock_timeout=100ms after 2 attempts"):
            run_ops(items, lambda op: op.ensure_check_constraint(
                "ck_items_qty", "items", "qty > 0", retries=1, **FAST))
    finally:
        holder.join()
    assert constraint_row(items, "items", "ck_items_qty") is None


def slow_predicate(engine: Engine) -> None:
    sql(engine, """
        CREATE FUNCTION slow_positive(v integer) RETURNS boolean
        LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM pg_sleep(0.001); RETURN v > 0; END $$;
    """)


def backend_locks(engine: Engine, pid: int) -> set[str]:
    return {r[0] for r in sql(engine, f"SELECT mode FROM pg_locks WHERE pid = {pid} "
                                      "AND relation = 'items'::regclass")}


def wait_for_validate(engine: Engine, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql(engine, "SELECT pid FROM pg_stat_activity WHERE state = 'active' "
                           "AND query LIKE '%VALIDATE CONSTRAINT%' AND pid <> pg_backend_pid()")
        if rows:
            return rows[0][0]
        time.sleep(0.02)
    raise AssertionError("VALIDATE never started")


def test_writers_keep_writing_while_validate_scans(items: Engine) -> None:
    slow_predicate(items)
    result: dict = {}

    def migrate() -> None:
        result["outcome"] = run_ops(items, lambda op: op.ensure_check_constraint(
            "ck_items_slow", "items", "slow_positive(qty)"))

    worker = threading.Thread(target=migrate)
    worker.start()
    pid = wait_for_validate(items)
    # The ADD ... NOT VALID is already committed: another session sees it.
    assert constraint_row(items, "items", "ck_items_slow")[1] is False
    assert backend_locks(items, pid) == {"ShareUpdateExclusiveLock"}
    started = time.monotonic()
    with items.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
        conn.exec_driver_sql("INSERT INTO items (qty) VALUES (42)")
    insert_seconds = time.monotonic() - started
    still_scanning = worker.is_alive()
    worker.join()
    assert still_scanning, "VALIDATE finished before the insert; make the predicate slower"
    assert insert_seconds < 0.2
    assert result["outcome"].action == "add"
    assert constraint_row(items, "items", "ck_items_slow")[1] is True


def test_violating_rows_fail_validate_and_keep_the_constraint_not_valid(items: Engine) -> None:
    sql(items, "UPDATE items SET qty = -qty WHERE id IN (7, 3, 11)")
    with pytest.raises(ValidationFailed) as err:
        run_ops(items, lambda op: op.ensure_check_constraint("ck_items_qty", "items", "qty > 0"))
    message = str(err.value)
    assert "ck_items_qty on items: 3 row(s) violate it (primary keys: 3, 7, 11)" in message
    assert "SELECT * FROM items AS t WHERE NOT (qty > 0)" in message
    assert err.value.count == 3 and err.value.sample == [3, 7, 11]
    assert constraint_row(items, "items", "ck_items_qty")[1] is False
    with pytest.raises(Exception, match="violates check constraint"):
        sql(items, "INSERT INTO items (qty) VALUES (-1)")  # new writes are already guarded

    sql(items, "UPDATE items SET qty = -qty WHERE qty < 0")
    outcome = run_ops(items, lambda op: op.ensure_check_constraint("ck_items_qty", "items",
                                                                   "qty > 0"))
    assert outcome.action == "validate"
    assert constraint_row(items, "items", "ck_items_qty")[1] is True


def test_fk_violation_message_names_rows(items: Engine) -> None:
    sql(items, "CREATE TABLE parents (id bigint PRIMARY KEY); INSERT INTO parents VALUES (1);"
               "ALTER TABLE items ADD COLUMN parent_id bigint; "
               "UPDATE items SET parent_id = CASE WHEN id = 5 THEN 99 WHEN id < 100 THEN 1 END")
    with pytest.raises(ValidationFailed, match=r"1 row\(s\) violate it \(primary keys: 5\)"):
        run_ops(items, lambda op: op.ensure_foreign_key("fk_items_parent", "items", "parents",
                                                        ["parent_id"], ["id"]))
