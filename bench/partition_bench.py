"""VALIDATE on a partitioned table: partition by partition (the toolkit) vs the whole tree at once.

A table hash-partitioned into P partitions (N rows in all) and a 1,000-row
referent. One writer thread inserts a row into the partitioned table every
2 ms on its own autocommit connection and times every insert (as
``migrations_bench.py`` does). On the same server, in one run, for each rule:

* ``check``     whole: ``ADD ... NOT VALID`` then one ``VALIDATE`` on the parent (every
                partition in one transaction); toolkit: ``op.ensure_check_constraint``
                (one VALIDATE per partition, then the parent's, which reads nothing);
* ``fk``        whole: on PostgreSQL before 18 the only native way, ``ADD FOREIGN KEY`` on the
                parent (scans every partition while holding SHARE ROW EXCLUSIVE, which
                blocks inserts); on 18+ ``NOT VALID`` + one ``VALIDATE``; toolkit:
                ``op.ensure_foreign_key``;
* ``not null``  whole: ``ALTER COLUMN ... SET NOT NULL`` (Alembic's ``alter_column``: scans the
                tree under ACCESS EXCLUSIVE); toolkit: ``op.ensure_not_null``;
* ``check re-run``: a bad row in the last partition fails a first run; it is fixed and the
  second run is timed: the work redone after a failure (whole: the VALIDATE again, every
  partition; toolkit: the same operation again, which resumes at the last partition).

Reported per case (the run of median total time out of ``--repeat``, default 3; the JSON
keeps every run): total time, the part of it spent in statements that read rows, the
writer's longest wait, inserts done, and the longest single statement (for the toolkit:
the longest partition's VALIDATE, i.e. the longest any partition stays locked by a
scan). Ratios toolkit / whole are printed side by side.

Run: ``.venv/bin/python bench/partition_bench.py [--rows N] [--partitions P] [--repeat R]
[--url URL] [--json PATH]``. Without ``--url`` a throwaway PostgreSQL is started and
deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

import alembic_integrity  # noqa: F401  registers the ensure_* operations
from alembic_integrity.errors import ValidationFailed
from alembic_integrity.pg import raw
from alembic_integrity.pg.throwaway import throwaway_postgres

DEFAULT_ROWS = 1_200_000
DEFAULT_PARTITIONS = 12
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "partitions.json"
TABLE, REFERENT = "pb_events", "pb_parent"
CHECK, FK = "pb_events_amount_check", "pb_events_parent_fk"
REFERENT_ROWS = 1_000
WRITER_INTERVAL_S = 0.002
WRITER_LEAD_IN_S = 0.3
WRITER_TAIL_S = 0.2
JOIN_TIMEOUT_S = 60.0

console = Console(stderr=True)


def exec_sql(engine: Engine, *statements: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            result = raw.execute(conn, statement)  # verbatim: % is modulo here
            rows = [tuple(r) for r in result] if result.returns_rows else []
    return rows


def build(engine: Engine, rows: int, partitions: int) -> float:
    began = time.perf_counter()
    exec_sql(
        engine,
        f"DROP TABLE IF EXISTS {TABLE}", f"DROP TABLE IF EXISTS {REFERENT}",
        "DROP SEQUENCE IF EXISTS pb_events_seq", "CREATE SEQUENCE pb_events_seq",
        f"CREATE TABLE {REFERENT} (id integer PRIMARY KEY)",
        f"INSERT INTO {REFERENT} SELECT generate_series(1, {REFERENT_ROWS})",
        f"""CREATE TABLE {TABLE} (id bigint NOT NULL DEFAULT nextval('pb_events_seq'),
              parent_id integer, amount integer, note text, payload text)
            PARTITION BY HASH (id)""",
        *[f"CREATE TABLE {TABLE}_{i:02d} PARTITION OF {TABLE} "
          f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})" for i in range(partitions)],
        "SET maintenance_work_mem = '256MB'",
        f"""INSERT INTO {TABLE} (id, parent_id, amount, note, payload)
            SELECT g, 1 + g % {REFERENT_ROWS}, g % 1000, 'note ' || g, md5(g::text)
            FROM generate_series(1, {rows}) g""",
        f"SELECT setval('pb_events_seq', {rows})",
        f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)",
        f"VACUUM (FREEZE, ANALYZE) {REFERENT}", f"VACUUM (FREEZE, ANALYZE) {TABLE}",
        f"SELECT count(*) FROM {TABLE}",
    )
    return time.perf_counter() - began


def reset(engine: Engine) -> None:
    exec_sql(engine, "SET lock_timeout = '30s'",
             f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {CHECK}, "
             f"DROP CONSTRAINT IF EXISTS {FK}, DROP CONSTRAINT IF EXISTS {TABLE}_note_not_null, "
             "ALTER COLUMN note DROP NOT NULL",
             f"DELETE FROM {TABLE} WHERE amount < 0", f"VACUUM {TABLE}")
    with contextlib.suppress(DBAPIError):
        exec_sql(engine, "CHECKPOINT")


def last_partition(engine: Engine) -> str:
    """The partition the toolkit validates last (its order: schema-qualified names)."""
    return str(exec_sql(engine, f"SELECT relid::regclass::text FROM pg_partition_tree('{TABLE}') "
                                "WHERE isleaf ORDER BY 1 DESC LIMIT 1")[0][0])


# --------------------------------------------------------------------------- writer


class Writer:
    """Inserts one row every 2 ms on its own autocommit connection, timing each insert."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.inserts: list[tuple[float, float, bool]] = []  # start, seconds, ok
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        if not self._running.wait(JOIN_TIMEOUT_S):
            raise RuntimeError(f"writer did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)

    def _run(self) -> None:
        sql = f"INSERT INTO {TABLE} (parent_id, amount, note) VALUES (%s, %s, %s)"
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                self._running.set()
                k, next_at = 0, time.perf_counter()
                while not self._stop.is_set():
                    delay = next_at - time.perf_counter()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    k += 1
                    began, ok = time.perf_counter(), True
                    try:
                        conn.execute(sql, (1 + k % REFERENT_ROWS, k % 1000, f"w{k}"))
                    except psycopg.Error:
                        ok = False
                    ended = time.perf_counter()
                    self.inserts.append((began, ended - began, ok))
                    next_at = max(next_at + WRITER_INTERVAL_S, ended)
        except BaseException as err:
            self.error = err
            self._running.set()

    def stats(self, lo: float, hi: float) -> dict[str, Any]:
        during = [i for i in self.inserts if i[0] < hi and i[0] + i[1] > lo]
        return {"inserts": len(during), "failed": sum(1 for i in during if not i[2]),
                "max_wait_ms": max((i[1] for i in during), default=0.0) * 1000.0}


class Timer:
    """The longest statement the benchmarked session sends, and the time spent scanning."""

    def __init__(self, engine: Engine) -> None:
        self.longest = (0.0, "")
        self.scan_s = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, *args: Any) -> None:
        conn.info["pb_began"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seconds = time.perf_counter() - conn.info.pop("pb_began", time.perf_counter())
        if seconds > self.longest[0]:
            self.longest = (seconds, " ".join(statement.split())[:90])
        if is_scan(statement):
            self.scan_s += seconds


def is_scan(statement: str) -> bool:
    """Statements that read the rows: VALIDATE, SET NOT NULL, a validated ADD CONSTRAINT."""
    s = statement.upper()
    if "PG_TEMP." in s:
        return False  # the toolkit's scratch table, empty
    return ("VALIDATE CONSTRAINT" in s or "SET NOT NULL" in s
            or ("ADD CONSTRAINT" in s and "NOT VALID" not in s))


# --------------------------------------------------------------------------- cases


def whole(*statements: str) -> Callable[[Engine], Any]:
    def run(engine: Engine) -> Any:
        for statement in statements:  # each in a transaction of its own
            exec_sql(engine, statement)
    return run


def toolkit(fn: Callable[[Any], Any]) -> Callable[[Engine], Any]:  # op.ensure_* are dynamic
    def run(engine: Engine) -> Any:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn)
            with ctx.begin_transaction():
                return fn(Operations(ctx))
    return run


def cases(version: int) -> list[tuple[str, str, Callable[[Engine], Any]]]:
    add_ck = f"ALTER TABLE {TABLE} ADD CONSTRAINT {CHECK} CHECK (amount >= 0)"
    add_fk = (f"ALTER TABLE {TABLE} ADD CONSTRAINT {FK} FOREIGN KEY (parent_id) "
              f"REFERENCES {REFERENT} (id)")
    fk_whole = (whole(add_fk) if version < 180000 else
                whole(add_fk + " NOT VALID", f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT {FK}"))
    return [
        ("check", "whole", whole(add_ck + " NOT VALID",
                                 f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT {CHECK}")),
        ("check", "toolkit", toolkit(lambda op: op.ensure_check_constraint(
            CHECK, TABLE, "amount >= 0"))),
        ("fk", "whole", fk_whole),
        ("fk", "toolkit", toolkit(lambda op: op.ensure_foreign_key(
            FK, TABLE, REFERENT, ["parent_id"], ["id"]))),
        ("not null", "whole", whole(f"ALTER TABLE {TABLE} ALTER COLUMN note SET NOT NULL")),
        ("not null", "toolkit", toolkit(lambda op: op.ensure_not_null(TABLE, "note"))),
    ]


@dataclass
class Result:
    rule: str
    way: str
    total_s: float
    writer_max_wait_ms: float
    inserts: int
    failed_inserts: int
    longest_statement_s: float
    longest_statement: str
    scan_s: float
    runs_total_s: list[float] = field(default_factory=list)
    runs_max_wait_ms: list[float] = field(default_factory=list)


def measure(engine: Engine, timer: Timer, conninfo: str, rule: str, way: str,
            run: Callable[[Engine], Any], prepare: Callable[[], None] | None = None) -> Result:
    with Writer(conninfo) as writer:
        time.sleep(WRITER_LEAD_IN_S)
        if prepare is not None:
            prepare()
        timer.longest, timer.scan_s = (0.0, ""), 0.0
        began = time.perf_counter()
        run(engine)
        ended = time.perf_counter()
        time.sleep(WRITER_TAIL_S)
    if writer.error is not None:
        raise RuntimeError(f"writer failed: {writer.error!r}")
    stats = writer.stats(began, ended)
    return Result(rule, way, ended - began, stats["max_wait_ms"], stats["inserts"],
                  stats["failed"], timer.longest[0], timer.longest[1], timer.scan_s)


def median_of(runs: list[Result]) -> Result:
    """The run of median total time, carrying every run's total and longest wait."""
    ordered = sorted(runs, key=lambda r: r.total_s)
    chosen = dataclasses.replace(ordered[len(ordered) // 2])
    chosen.runs_total_s = [r.total_s for r in runs]
    chosen.runs_max_wait_ms = [r.writer_max_wait_ms for r in runs]
    return chosen


def rerun_case(engine: Engine, timer: Timer, conninfo: str, way: str,
               run: Callable[[Engine], Any]) -> Result:
    """A bad row in the last partition makes a first run fail; fixed; the re-run is timed."""
    bad = last_partition(engine)
    exec_sql(engine, f"UPDATE {bad} SET amount = -1 WHERE id = (SELECT min(id) FROM {bad})")
    if way == "whole":  # by hand: the constraint stays NOT VALID when the scan fails
        exec_sql(engine, f"ALTER TABLE {TABLE} ADD CONSTRAINT {CHECK} "
                         "CHECK (amount >= 0) NOT VALID")
        run = whole(f"ALTER TABLE {TABLE} VALIDATE CONSTRAINT {CHECK}")

    def first_run() -> None:
        with contextlib.suppress(ValidationFailed, DBAPIError):
            run(engine)
        exec_sql(engine, f"UPDATE {bad} SET amount = 1 WHERE amount < 0")

    return measure(engine, timer, conninfo, "check re-run", way, run, prepare=first_run)


# --------------------------------------------------------------------------- report


def report(results: list[Result], meta: dict[str, Any]) -> None:
    table = Table(title=f"VALIDATE on a partitioned table ({meta['rows']:,} rows, "
                        f"{meta['partitions']} partitions, {meta['server_version']})")
    for column in ("rule", "way", "total s", "scanning s", "writer longest wait ms",
                   "inserts", "longest statement s", "ratio total", "ratio wait"):
        table.add_column(column, justify="left" if column in ("rule", "way") else "right")
    by_key = {(r.rule, r.way): r for r in results}
    for r in results:
        base = by_key.get((r.rule, "whole"))
        ratio_total = ratio_wait = ""
        if r.way == "toolkit" and base is not None:
            ratio_total = f"x{r.total_s / base.total_s:.2f}"
            ratio_wait = f"x{r.writer_max_wait_ms / max(base.writer_max_wait_ms, 0.001):.2f}"
        failed = f" ({r.failed_inserts} failed)" if r.failed_inserts else ""
        table.add_row(r.rule, r.way, f"{r.total_s:.3f}", f"{r.scan_s:.3f}",
                      f"{r.writer_max_wait_ms:.1f}",
                      f"{r.inserts}{failed}",
                      f"{r.longest_statement_s:.3f}", ratio_total, ratio_wait)
    Console(width=160).print(table)


def psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median shown")
    parser.add_argument("--url")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(throwaway_postgres())
        engine = create_engine(url)
        stack.callback(engine.dispose)
        results, meta = run_all(engine, url, args.rows, args.partitions, args.repeat)
    report(results, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]},
                                    indent=2))
    console.log(f"wrote {args.json}")


def run_all(engine: Engine, url: str, rows: int, partitions: int, repeat: int
            ) -> tuple[list[Result], dict[str, Any]]:
    version = int(exec_sql(engine, "SHOW server_version_num")[0][0])
    meta = {"rows": rows, "partitions": partitions, "cores": os.cpu_count(),
            "server_version": exec_sql(engine, "SHOW server_version")[0][0],
            "python": platform.python_version(), "repeat": repeat}
    console.log(f"building {TABLE}: {rows:,} rows in {partitions} partitions")
    meta["build_s"] = build(engine, rows, partitions)
    conninfo = psycopg_conninfo(url)
    timer = Timer(engine)
    results: list[Result] = []
    for rule, way, run in cases(version):
        console.log(f"{rule} / {way} x{repeat} ...")
        runs = []
        for _ in range(repeat):
            reset(engine)
            runs.append(measure(engine, timer, conninfo, rule, way, run))
        results.append(median_of(runs))
    for way, run in ((w, r) for rl, w, r in cases(version) if rl == "check"):
        console.log(f"check re-run after a failure / {way} x{repeat} ...")
        runs = []
        for _ in range(repeat):
            reset(engine)
            runs.append(rerun_case(engine, timer, conninfo, way, run))
        results.append(median_of(runs))
    exec_sql(engine, f"DROP TABLE IF EXISTS {TABLE}", f"DROP TABLE IF EXISTS {REFERENT}",
             "DROP SEQUENCE IF EXISTS pb_events_seq")
    return results, meta


if __name__ == "__main__":
    main()
