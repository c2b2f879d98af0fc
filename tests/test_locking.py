"""Lock behaviour: never queue behind a long lock, the error names the blocker, busy
tables still get their DDL, and writers keep writing while VALIDATE scans.

Assertions are on behaviour (which locks a backend holds or waits for, what was sent,
what the error says), never on how long something took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from alembic_integrity.errors import LockRetriesExhausted, ValidationFailed
from alembic_integrity.pg import raw
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.pg.locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    ROW_EXCLUSIVE,
    SHARE_ROW_EXCLUSIVE,
    LockNeed,
    conflicts,
    with_lock_retries,
)
from alembic_integrity.settings import Settings
from conftest import constraint_row, run_ops, sql

TOOLKIT_APP = "ai-toolkit-under-test"
LONG_S = 0.3  # a holder this old is well past lock_timeout=50ms


@pytest.fixture
def items(engine: Engine) -> Engine:
    sql(engine, """
        CREATE TABLE parents (id bigint PRIMARY KEY); INSERT INTO parents VALUES (1);
        CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, qty integer,
                            parent_id bigint DEFAULT 1);
        INSERT INTO items (qty) SELECT g FROM generate_series(1, 3000) g;
    """)
    return engine


@pytest.fixture
def toolkit(items: Engine) -> Iterator[Engine]:
    """A second engine for the toolkit, named so a third session can find its backend."""
    url = items.url.update_query_dict({"application_name": TOOLKIT_APP})
    eng = create_engine(url)
    yield eng
    eng.dispose()


class Holder:
    """A session that takes ``LOCK TABLE ... IN mode`` and keeps it until released."""

    def __init__(self, engine: Engine, table: str, mode: str, note: str = "report") -> None:
        self.engine, self.table, self.mode, self.note = engine, table, mode, note
        self.held = threading.Event()
        self.release = threading.Event()
        self.released = threading.Event()
        self.pid: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.engine.connect() as conn:
            self.pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            conn.exec_driver_sql(f"LOCK TABLE {self.table} IN {self.mode} MODE")
            conn.exec_driver_sql(f"SELECT count(*) /* {self.note} */ FROM {self.table}")
            self.held.set()
            self.release.wait(30)
            conn.rollback()
            self.released.set()

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.held.wait(10)
        time.sleep(LONG_S)  # setup, not an assertion: the holder is now a long one
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the test
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def toolkit_locks(engine: Engine) -> list[tuple[str, str, bool]]:
    """(relation, mode, granted) of every relation lock the toolkit's backend has or wants."""
    return [tuple(r) for r in sql(engine, f"""
        SELECT l.relation::regclass::text, l.mode, l.granted FROM pg_locks l
        JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE a.application_name = '{TOOLKIT_APP}' AND l.locktype = 'relation'
          AND l.relation IN ('items'::regclass, 'parents'::regclass)""")]


def looking(engine: Engine) -> bool:
    """Whether the toolkit's backend last ran (or runs) its look at pg_locks."""
    return bool(sql(engine, f"""SELECT count(*) FROM pg_stat_activity
        WHERE application_name = '{TOOLKIT_APP}'
          AND query LIKE '/* alembic_integrity: looking at pg_locks%'""")[0][0])


class Sent:
    """Statements the toolkit sent, each with whether the holder had released by then."""

    def __init__(self, engine: Engine, holder: Holder) -> None:
        self.log: list[tuple[str, bool]] = []
        self.holder = holder
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.log.append((statement, self.holder.released.is_set()))

    def alters(self) -> list[tuple[str, bool]]:
        return [(s, after) for s, after in self.log
                if s.lstrip().upper().startswith("ALTER") and "pg_temp." not in s]


def not_asking(samples: list[list[tuple[str, str, bool]]]) -> bool:
    """No lock request of the toolkit's backend is waiting, and it holds nothing stronger
    than the ACCESS SHARE its catalog reads take (which block no one)."""
    return all(granted and mode == "AccessShareLock"
               for sample in samples for _, mode, granted in sample)


def watch_while_held(observer: Engine, thread: threading.Thread, rounds: int = 15
                     ) -> list[list[tuple[str, str, bool]]]:
    """Samples of the toolkit backend's relation locks while the holder still holds;
    also checks that the toolkit is there, looking at pg_locks."""
    samples = []
    looked = False
    for _ in range(rounds):
        samples.append(toolkit_locks(observer))
        looked = looked or looking(observer)
        assert thread.is_alive(), "the operation finished while the long lock was held"
        time.sleep(0.02)
    assert looked, "the toolkit's backend never showed its look at pg_locks"
    return samples


def test_conflict_matrix_is_postgresqls() -> None:
    assert conflicts(ACCESS_SHARE, ACCESS_EXCLUSIVE)
    assert not conflicts(ACCESS_SHARE, SHARE_ROW_EXCLUSIVE)
    assert conflicts(ROW_EXCLUSIVE, SHARE_ROW_EXCLUSIVE)
    assert not conflicts(ROW_EXCLUSIVE, ROW_EXCLUSIVE)
    modes = ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
             "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]
    for a in modes:
        assert conflicts(a, ACCESS_EXCLUSIVE)
        for b in modes:
            assert conflicts(a, b) == conflicts(b, a)


def test_escalation_is_doubled_and_capped() -> None:
    settings = Settings(lock_timeout_ms=50, lock_timeout_max_ms=200)
    assert [settings.attempt_lock_timeout_ms(k) for k in range(5)] == [50, 100, 200, 200, 200]


def test_no_lock_request_while_a_long_conflicting_lock_is_held(items: Engine,
                                                               toolkit: Engine) -> None:
    with Holder(items, "items", "ACCESS SHARE") as holder:
        sent = Sent(toolkit, holder)
        thread, result = in_thread(lambda: run_ops(toolkit, lambda op: op.ensure_check_constraint(
            "ck_items_qty", "items", "qty > 0")))
        samples = watch_while_held(items, thread)
        # Not waiting in the lock queue, not holding anything on the table: just looking.
        assert not_asking(samples), samples
        assert constraint_row(items, "items", "ck_items_qty") is None
    thread.join(30)
    assert "error" not in result, result.get("error")
    assert result["value"].attempts == 2  # ADD and VALIDATE, each granted at the first try
    assert sent.alters() and all(after for _, after in sent.alters())  # all after release
    assert constraint_row(items, "items", "ck_items_qty")[1] is True


def test_fk_waits_for_a_long_writer_on_the_referenced_table(items: Engine,
                                                           toolkit: Engine) -> None:
    # A long write transaction on the parent conflicts with the FK's SHARE ROW EXCLUSIVE there;
    # queueing would hold ACCESS EXCLUSIVE on items meanwhile and stall every writer of items.
    with Holder(items, "parents", "ROW EXCLUSIVE"):
        thread, result = in_thread(lambda: run_ops(toolkit, lambda op: op.ensure_foreign_key(
            "fk_items_parent", "items", "parents", ["parent_id"], ["id"])))
        samples = watch_while_held(items, thread)
        assert not_asking(samples), samples
        sql(items, "INSERT INTO items (qty) VALUES (5)")  # writers of items go on meanwhile
    thread.join(30)
    assert "error" not in result, result.get("error")
    assert constraint_row(items, "items", "fk_items_parent")[1] is True


def test_adding_a_foreign_key_does_not_wait_for_readers(items: Engine, toolkit: Engine) -> None:
    # ADD FOREIGN KEY ... NOT VALID takes SHARE ROW EXCLUSIVE, which readers do not conflict
    # with; the toolkit must not ask for more (a DROP IF EXISTS would take ACCESS EXCLUSIVE).
    with Holder(items, "items", "ACCESS SHARE"), Holder(items, "parents", "ACCESS SHARE"):
        outcome = run_ops(toolkit, lambda op: op.ensure_foreign_key(
            "fk_items_parent", "items", "parents", ["parent_id"], ["id"]))
    assert outcome.action == "add" and outcome.attempts == 2
    assert constraint_row(items, "items", "fk_items_parent")[1] is True


def test_a_session_already_queued_counts_as_in_the_way(items: Engine, toolkit: Engine) -> None:
    # ACCESS SHARE on parents does not conflict with the FK's SHARE ROW EXCLUSIVE, but a DDL
    # queued behind it (ACCESS EXCLUSIVE) does: asking now would queue us behind that one.
    with Holder(items, "parents", "ACCESS SHARE"):
        queued, _ = in_thread(lambda: sql(items, "LOCK TABLE parents IN ACCESS EXCLUSIVE MODE"))
        time.sleep(LONG_S)
        thread, result = in_thread(lambda: run_ops(toolkit, lambda op: op.ensure_foreign_key(
            "fk_items_parent", "items", "parents", ["parent_id"], ["id"])))
        samples = watch_while_held(items, thread)
        assert not_asking(samples), samples
    queued.join(30)
    thread.join(30)
    assert "error" not in result, result.get("error")
    assert constraint_row(items, "items", "fk_items_parent")[1] is True


def test_error_names_the_blocking_session_and_changes_nothing(items: Engine,
                                                              toolkit: Engine) -> None:
    with Holder(items, "items", "ACCESS SHARE", note="nightly revenue report") as holder:
        with pytest.raises(LockRetriesExhausted) as err:
            run_ops(toolkit, lambda op: op.ensure_check_constraint(
                "ck_items_qty", "items", "qty > 0", lock_wait="300ms"))
        message = str(err.value)
    assert f"pid {holder.pid} holds AccessShareLock on items for " in message
    assert "idle in transaction" in message and "nightly revenue report" in message
    assert "the lock was never requested" in message and "run the upgrade again" in message
    assert "\n" not in message
    assert constraint_row(items, "items", "ck_items_qty") is None


def test_hidden_query_text_is_said_so_and_long_holders_are_still_seen(items: Engine) -> None:
    # A role without pg_read_all_stats sees neither the query nor the age of other roles'
    # sessions: the toolkit ages them by its own looks, and says why the query is missing.
    sql(items, "CREATE ROLE ai_migrator LOGIN; GRANT ALL ON items, parents TO ai_migrator;"
               "ALTER TABLE items OWNER TO ai_migrator")
    url = make_url(str(items.url.render_as_string(hide_password=False))).set(
        username="ai_migrator").update_query_dict({"application_name": TOOLKIT_APP})
    migrator = create_engine(url)
    try:
        with Holder(items, "items", "ACCESS SHARE") as holder, \
                pytest.raises(LockRetriesExhausted) as err:
            run_ops(migrator, lambda op: op.ensure_check_constraint(
                "ck_items_qty", "items", "qty > 0", lock_wait="400ms"))
        message = str(err.value)
        assert f"pid {holder.pid} holds AccessShareLock on items" in message
        assert "query not visible to this role: it needs pg_read_all_stats" in message
        assert "the lock was never requested" in message
    finally:
        migrator.dispose()
    assert constraint_row(items, "items", "ck_items_qty") is None


def test_a_table_under_constant_short_writes_still_gets_its_ddl(items: Engine) -> None:
    stop = threading.Event()
    counts = [0] * 8
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            with items.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                while not stop.is_set():
                    conn.exec_driver_sql(f"INSERT INTO items (qty) VALUES ({k + 1})")
                    counts[k] += 1
        except BaseException as err:  # reported below
            errors.append(err)

    writers = [threading.Thread(target=write, args=(k,), daemon=True) for k in range(8)]
    for w in writers:
        w.start()
    try:
        time.sleep(0.2)
        before = sum(counts)
        outcomes = run_ops(items, lambda op: [
            op.ensure_check_constraint("ck_items_qty", "items", "qty > 0", lock_wait="20s"),
            op.ensure_not_null("items", "qty", lock_wait="20s"),
            op.ensure_foreign_key("fk_items_parent", "items", "parents", ["parent_id"], ["id"],
                                  lock_wait="20s"),
        ])
        during = sum(counts) - before
    finally:
        stop.set()
        for w in writers:
            w.join(10)
    assert not errors, errors
    assert during > 0  # the writers kept writing
    assert [o.action for o in outcomes] == ["add", "set-not-null", "add"]
    assert constraint_row(items, "items", "ck_items_qty")[1] is True
    assert constraint_row(items, "items", "fk_items_parent")[1] is True
    assert sql(items, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'items'::regclass "
                      "AND attname = 'qty'") == [(True,)]


def lock_attempt(conn: Any, table: str, tried: list[int]) -> Callable[[int], None]:
    """An attempt that takes ACCESS EXCLUSIVE on ``table`` under the lock_timeout given."""
    def attempt(lock_timeout_ms: int) -> None:
        tried.append(lock_timeout_ms)
        raw.execute(conn, "BEGIN")
        try:
            raw.execute(conn, f"SET LOCAL lock_timeout = '{lock_timeout_ms}ms'")
            raw.execute(conn, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        finally:
            raw.execute(conn, "ROLLBACK")
    return attempt


def test_timed_out_attempts_escalate_lock_timeout_up_to_the_cap(items: Engine) -> None:
    # No relations declared (as a caller that cannot name them): attempts go ahead and time
    # out behind the holder; each one doubles lock_timeout, capped, until retries run out.
    tried: list[int] = []
    settings = Settings(lock_timeout_ms=20, lock_timeout_max_ms=80, retries=4, backoff_ms=1,
                        backoff_max_ms=5)
    with Holder(items, "items", "ACCESS SHARE"), items.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(LockRetriesExhausted, match=r"not granted in 5 attempt\(s\) "
                                                       r"\(lock_timeout 20ms up to 80ms\)"):
            with_lock_retries(lock_attempt(conn, "items", tried), settings, "test step",
                              conn=conn)
    assert tried == [20, 40, 80, 80, 80]


def test_a_lock_on_a_partition_counts_for_its_parent_table(engine: Engine) -> None:
    sql(engine, "CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);"
                "CREATE TABLE events_2025 PARTITION OF events "
                "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    tried: list[int] = []
    with Holder(engine, "events_2025", "ACCESS SHARE") as holder, engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(LockRetriesExhausted) as err:
            with_lock_retries(lock_attempt(conn, "events", tried),
                              Settings(lock_wait_ms=300), "test step", conn=conn,
                              needs=[LockNeed(TableName("events"), ACCESS_EXCLUSIVE)])
    assert tried == []  # never asked for the lock
    assert f"pid {holder.pid} holds AccessShareLock on events_2025" in str(err.value)


def test_repair_batches_share_the_short_escalating_timeout(items: Engine) -> None:
    from alembic_integrity.repair.log import run_short

    seen: list[str] = []
    with items.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        event.listen(conn, "before_cursor_execute",
                     lambda *a: seen.append(a[2]) if "lock_timeout" in a[2] else None)
        rows = run_short(conn, "SELECT 1", Settings(lock_timeout_ms=40), "a batch")
    assert rows == [(1,)]
    assert seen == ["SET LOCAL lock_timeout = '40ms'"]


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
    result: dict[str, Any] = {}

    def migrate() -> None:
        result["outcome"] = run_ops(items, lambda op: op.ensure_check_constraint(
            "ck_items_slow", "items", "slow_positive(qty)"))

    worker = threading.Thread(target=migrate)
    worker.start()
    pid = wait_for_validate(items)
    # The ADD ... NOT VALID is already committed: another session sees it.
    assert constraint_row(items, "items", "ck_items_slow")[1] is False
    assert backend_locks(items, pid) == {"ShareUpdateExclusiveLock"}
    # The insert must not wait for any lock at all: with lock_timeout 10ms, waiting behind
    # the scan (which runs for seconds) would fail it with lock_not_available.
    with items.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '10ms'")
        conn.exec_driver_sql("INSERT INTO items (qty) VALUES (42)")
    still_scanning = worker.is_alive()
    worker.join()
    assert still_scanning, "VALIDATE finished before the insert; make the predicate slower"
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
    sql(items, "UPDATE items SET parent_id = CASE WHEN id = 5 THEN 99 WHEN id < 100 THEN 1 END")
    with pytest.raises(ValidationFailed, match=r"1 row\(s\) violate it \(primary keys: 5\)"):
        run_ops(items, lambda op: op.ensure_foreign_key("fk_items_parent", "items", "parents",
                                                        ["parent_id"], ["id"]))


def test_a_repair_batch_given_its_table_waits_for_a_long_holder(items: Engine) -> None:
    from alembic_integrity.repair.log import run_short

    with Holder(items, "items", "SHARE") as holder, items.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(LockRetriesExhausted) as err:
            run_short(conn, "UPDATE items SET qty = qty WHERE id = 1",
                      Settings(lock_wait_ms=300), "repair batch",
                      locks=[LockNeed(TableName("items"), ROW_EXCLUSIVE)])
    message = str(err.value)
    assert f"pid {holder.pid} holds ShareLock on items" in message
    assert "the lock was never requested" in message and "the repair resumes" in message


def test_repair_batches_look_before_they_lock(items: Engine) -> None:
    """``repair --apply`` behind a long SHARE holder: no batch queues, nothing is changed,
    and the error names the blocker; once it is gone the same repair goes through."""
    from alembic_integrity.repair import repair
    from alembic_integrity.rules.kinds import CheckRule
    from alembic_integrity.rules.metadata import DeclaredRules
    from alembic_integrity.rules.policies import SetValue

    sql(items, "UPDATE items SET qty = -qty WHERE id <= 10")
    rule = CheckRule("ck_items_qty", TableName("items"), "qty > 0",
                     (SetValue(column="qty", value=1),))
    declared = DeclaredRules(rules=[rule])
    with Holder(items, "items", "SHARE") as holder, pytest.raises(LockRetriesExhausted) as err:
        repair(items, declared, apply=True, settings=Settings(lock_wait_ms=300))
    assert f"pid {holder.pid} holds ShareLock on items" in str(err.value)
    assert sql(items, "SELECT count(*) FROM items WHERE qty <= 0") == [(10,)]
    result = repair(items, declared, apply=True)
    assert sql(items, "SELECT count(*) FROM items WHERE qty <= 0") == [(0,)]
    assert result.exit_code == 0
