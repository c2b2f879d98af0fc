"""Writers behind our DDL: plain Alembic vs the toolkit, while a long lock is held.

Two scenarios, side by side in one run, on one server:

* **long holder** - for CHECK, NOT NULL and FOREIGN KEY, at each table size
  (default 300,000 and 3,000,000 rows): one writer inserts a row every 2 ms
  into the table and times every insert; a second session takes a lock that
  conflicts with the DDL and keeps it for 2 s; 0.2 s later the migration
  starts. For CHECK and NOT NULL the holder is a report query (``ACCESS
  SHARE`` on the table). ``ADD FOREIGN KEY`` takes ``SHARE ROW EXCLUSIVE``,
  which readers do not conflict with, so for the foreign key the holder is a
  long write transaction (``ROW EXCLUSIVE``): on the table itself in ``fk
  (table locked)``, on the *referenced* table in ``fk (referent locked)``.
  ``plain`` is the Alembic op in Alembic's one transaction; ``toolkit`` is the
  matching ``op.ensure_*`` with default settings. Figure: the writer's
  longest insert while the migration ran.
* **busy table** - eight writers insert in a loop (one short transaction
  each, a 1 ms pause between) and the migration adds CHECK + NOT NULL + FK:
  does the toolkit still get its DDL through, and what is the writers'
  longest wait? ``baseline`` is the same window with no migration at all (the
  machine's own noise).

Run: ``.venv/bin/python bench/lock_queue_bench.py [--quick] [--sizes 300000,3000000]
[--url URL] [--json PATH]``. ``--quick`` runs 300,000 rows only. Without ``--url`` a
throwaway PostgreSQL is started and deleted afterwards. Exit code 1 when a migration
left the wrong end state, 0 otherwise (targets are reported, not enforced).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic.operations import Operations
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine

import alembic_integrity  # registers the ensure_* operations
from alembic_integrity.pg.throwaway import throwaway_postgres
from alembic_integrity.settings import Settings
from migrations_bench import (
    JOIN_TIMEOUT_S,
    Insert,
    Names,
    StatementTimer,
    Writer,
    build_tables,
    exec_sql,
    psycopg_conninfo,
    reset_table,
    run_migration,
    server_facts,
)

DEFAULT_SIZES = (300_000, 3_000_000)
QUICK_SIZES = (300_000,)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "lock_queue.json"
HOLD_S = 2.0  # the long holder keeps its lock this long ...
HOLD_LEAD_S = 0.2  # ... and has held it this long when the migration starts
WRITER_LEAD_S = 0.3
WRITER_TAIL_S = 0.2
BUSY_WRITERS = 8
BUSY_PAUSE_S = 0.001
BUSY_BASELINE_S = 1.5
TARGET_MS = 100.0
AIM_MS = 60.0

KINDS = ("check", "not null", "fk (table locked)", "fk (referent locked)")

console = Console(stderr=True)


# --------------------------------------------------------------------------- sessions


class Holder:
    """A session that takes ``LOCK TABLE table IN mode`` and keeps it for ``hold`` seconds."""

    def __init__(self, conninfo: str, table: str, mode: str, hold: float = HOLD_S) -> None:
        self.conninfo, self.table, self.mode, self.hold = conninfo, table, mode, hold
        self.error: BaseException | None = None
        self._locked = threading.Event()
        self._thread = threading.Thread(target=self._run, name="holder", daemon=True)

    def __enter__(self) -> Holder:
        self._thread.start()
        if not self._locked.wait(JOIN_TIMEOUT_S) or self.error is not None:
            raise RuntimeError(f"holder could not take its lock: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(JOIN_TIMEOUT_S + self.hold)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.conninfo, autocommit=False) as conn:
                conn.execute(f"LOCK TABLE {self.table} IN {self.mode} MODE")
                self._locked.set()
                time.sleep(self.hold)
                conn.rollback()
        except BaseException as err:
            self.error = err
            self._locked.set()


class BusyWriters:
    """``n`` sessions, each inserting one row per transaction in a loop, timing each."""

    def __init__(self, conninfo: str, table: str, n: int = BUSY_WRITERS) -> None:
        self.conninfo, self.table = conninfo, table
        self.inserts: list[list[Insert]] = [[] for _ in range(n)]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._ready = threading.Barrier(n + 1)
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                         for k in range(n)]

    def __enter__(self) -> BusyWriters:
        for t in self._threads:
            t.start()
        self._ready.wait(JOIN_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(JOIN_TIMEOUT_S)

    def _run(self, k: int) -> None:
        sql = f"INSERT INTO {self.table} (parent_id, amount, note) VALUES (%s, %s, %s)"
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                self._ready.wait(JOIN_TIMEOUT_S)
                i = 0
                while not self._stop.is_set():
                    i += 1
                    began = time.perf_counter()
                    conn.execute(sql, (1 + (i * 7 + k) % 1000, i % 1000, f"busy {k} {i}"))
                    self.inserts[k].append(Insert(began, time.perf_counter() - began, True))
                    time.sleep(BUSY_PAUSE_S)
        except BaseException as err:  # reported by the caller
            self.errors.append(err)

    def stats(self, window: tuple[float, float]) -> dict[str, Any]:
        lo, hi = window
        during = [i for per in self.inserts for i in per
                  if i.start < hi and i.start + i.seconds > lo]
        latencies = sorted(i.seconds * 1000.0 for i in during)
        return {
            "inserts": len(during),
            "max_wait_ms": latencies[-1] if latencies else None,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            if latencies else None,
            "p50_ms": statistics.median(latencies) if latencies else None,
        }


# --------------------------------------------------------------------------- migrations


def plain_op(names: Names, kind: str) -> Callable[[Operations], Any]:
    def run(op: Operations) -> Any:
        if kind == "check":
            op.create_check_constraint(names.check, names.table, "amount >= 0")
        elif kind == "not null":
            op.alter_column(names.table, "note", nullable=False)
        else:
            op.create_foreign_key(names.fk, names.table, names.parent, ["parent_id"], ["id"])
        return None

    return run


def toolkit_op(names: Names, kind: str) -> Callable[[Operations], Any]:
    def run(op: Operations) -> Any:
        if kind == "check":
            return [op.ensure_check_constraint(names.check, names.table, "amount >= 0")]
        if kind == "not null":
            return [op.ensure_not_null(names.table, "note")]
        return [op.ensure_foreign_key(names.fk, names.table, names.parent, ["parent_id"],
                                      ["id"])]

    return run


def plain_all(names: Names) -> Callable[[Operations], Any]:
    def run(op: Operations) -> Any:
        for kind in ("check", "not null", "fk"):
            plain_op(names, kind)(op)
        return None

    return run


def toolkit_all(names: Names) -> Callable[[Operations], Any]:
    def run(op: Operations) -> Any:
        return [o for kind in ("check", "not null", "fk") for o in toolkit_op(names, kind)(op)]

    return run


def done(engine: Engine, names: Names, kinds: tuple[str, ...]) -> bool:
    """Whether every rule of ``kinds`` is in place and validated."""
    valid = dict(exec_sql(engine, "SELECT conname, convalidated FROM pg_constraint "
                                  f"WHERE conrelid = '{names.table}'::regclass"))
    not_null = exec_sql(engine, "SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                                f"'{names.table}'::regclass AND attname = 'note'")[0][0]
    wanted = {"check": valid.get(names.check) is True, "not null": bool(not_null),
              "fk": valid.get(names.fk) is True, "fk (table locked)": valid.get(names.fk) is True,
              "fk (referent locked)": valid.get(names.fk) is True}
    return all(wanted[k] for k in kinds)


def holder_for(names: Names, kind: str) -> tuple[str, str]:
    """(table, mode) the long holder locks in this case.

    ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE, which a reader's ACCESS SHARE does not
    conflict with: its holder is a long write transaction (ROW EXCLUSIVE) instead.
    """
    if kind == "fk (referent locked)":
        return names.parent, "ROW EXCLUSIVE"
    if kind == "fk (table locked)":
        return names.table, "ROW EXCLUSIVE"
    return names.table, "ACCESS SHARE"


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    scenario: str
    kind: str
    variant: str
    rows: int
    total_s: float
    writers: dict[str, Any]
    looks: int
    lock_timeouts: int
    attempts: int | None
    ok: bool


def count_statements(statements: list[Any]) -> tuple[int, int]:
    looks = sum(1 for s in statements if "looking at pg_locks" in s.sql)
    timeouts = sum(1 for s in statements if s.error == "55P03")
    return looks, timeouts


def attempts_of(result: Any) -> int | None:
    return sum(o.attempts for o in result) if isinstance(result, list) else None


def long_holder_case(engine: Engine, timer: StatementTimer, conninfo: str, names: Names,
                     rows: int, kind: str, variant: str) -> Case:
    reset_table(engine, names)
    fn = toolkit_op(names, kind) if variant == "toolkit" else plain_op(names, kind)
    table, mode = holder_for(names, kind)
    with Writer(conninfo, names.table) as writer:
        time.sleep(WRITER_LEAD_S)
        with timer.record() as statements, Holder(conninfo, table, mode):
            time.sleep(HOLD_LEAD_S)
            began, ended, result = run_migration(engine, fn)
        time.sleep(WRITER_TAIL_S)
    if writer.error is not None:
        raise RuntimeError(f"writer failed: {writer.error!r}")
    looks, timeouts = count_statements(statements)
    kinds = (kind,)
    return Case("long holder", kind, variant, rows, ended - began, writer.stats((began, ended)),
                looks, timeouts, attempts_of(result), done(engine, names, kinds))


def busy_case(engine: Engine, timer: StatementTimer, conninfo: str, names: Names, rows: int,
              variant: str) -> Case:
    reset_table(engine, names)
    with BusyWriters(conninfo, names.table) as busy:
        time.sleep(WRITER_LEAD_S)
        with timer.record() as statements:
            if variant == "baseline":
                began = time.perf_counter()
                time.sleep(BUSY_BASELINE_S)
                ended, result = time.perf_counter(), None
            else:
                fn = toolkit_all(names) if variant == "toolkit" else plain_all(names)
                began, ended, result = run_migration(engine, fn)
        time.sleep(WRITER_TAIL_S)
    if busy.errors:
        raise RuntimeError(f"busy writer failed: {busy.errors[0]!r}")
    looks, timeouts = count_statements(statements)
    ok = variant == "baseline" or done(engine, names, ("check", "not null", "fk"))
    return Case("busy table", "check + not null + fk", variant, rows, ended - began,
                busy.stats((began, ended)), looks, timeouts, attempts_of(result), ok)


def log_case(c: Case) -> None:
    console.log(f"  {c.scenario} / {c.kind} / {c.variant} @ {c.rows:,}: total {c.total_s:.3f} s,"
                f" writers' longest wait {fmt(c.writers['max_wait_ms'])} ms, {c.looks} looks, "
                f"{c.lock_timeouts} lock timeouts, ok={c.ok}")


def run_size(engine: Engine, timer: StatementTimer, conninfo: str, rows: int) -> list[Case]:
    names = Names(f"lq_items_{rows}", f"lq_parent_{rows}")
    console.log(f"building {names.table}: {rows:,} rows")
    console.log(f"  built in {build_tables(engine, names, rows):.1f} s")
    cases: list[Case] = []
    try:
        for kind in KINDS:
            for variant in ("plain", "toolkit"):
                cases.append(long_holder_case(engine, timer, conninfo, names, rows, kind,
                                              variant))
                log_case(cases[-1])
        for variant in ("baseline", "plain", "toolkit"):
            cases.append(busy_case(engine, timer, conninfo, names, rows, variant))
            log_case(cases[-1])
    finally:
        with contextlib.suppress(Exception):
            exec_sql(engine, f"DROP TABLE IF EXISTS {names.table}",
                     f"DROP TABLE IF EXISTS {names.parent}")
    return cases


# --------------------------------------------------------------------------- report


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def pick(cases: list[Case], scenario: str, kind: str, variant: str, rows: int) -> Case:
    return next(c for c in cases if (c.scenario, c.kind, c.variant, c.rows)
                == (scenario, kind, variant, rows))


def targets(cases: list[Case], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rows in sizes:
        for kind in KINDS:
            t = pick(cases, "long holder", kind, "toolkit", rows)
            p = pick(cases, "long holder", kind, "plain", rows)
            value = t.writers["max_wait_ms"]
            out.append({"target": f"long holder, {kind}, {rows:,} rows: writers' longest wait",
                        "toolkit_ms": value, "plain_ms": p.writers["max_wait_ms"],
                        "limit_ms": TARGET_MS, "aim_ms": AIM_MS,
                        "met": value is not None and value <= TARGET_MS and t.ok})
        t = pick(cases, "busy table", "check + not null + fk", "toolkit", rows)
        p = pick(cases, "busy table", "check + not null + fk", "plain", rows)
        value = t.writers["max_wait_ms"]
        out.append({"target": f"busy table ({BUSY_WRITERS} writers), {rows:,} rows: DDL done, "
                              "writers' longest wait",
                    "toolkit_ms": value, "plain_ms": p.writers["max_wait_ms"],
                    "limit_ms": TARGET_MS, "aim_ms": AIM_MS,
                    "met": value is not None and value <= TARGET_MS and t.ok})
    return out


def print_report(cases: list[Case], goals: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Writers behind the DDL - PostgreSQL {meta['server_version']}, "
                        f"{meta['cpu_count']} cores; long holder {HOLD_S:.0f} s, "
                        f"{BUSY_WRITERS} busy writers")
    for col, justify in (("scenario", "left"), ("rule", "left"), ("rows", "right"),
                         ("plain: writers' longest wait", "right"),
                         ("toolkit: writers' longest wait", "right"), ("plain / toolkit", "right"),
                         ("plain total", "right"), ("toolkit total", "right"),
                         ("toolkit looks / lock timeouts", "right"), ("end state", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for rows in meta["sizes"]:
        for scenario, kind in [*(("long holder", k) for k in KINDS),
                               ("busy table", "check + not null + fk")]:
            p = pick(cases, scenario, kind, "plain", rows)
            t = pick(cases, scenario, kind, "toolkit", rows)
            pw, tw = p.writers["max_wait_ms"] or 0.0, t.writers["max_wait_ms"] or 0.0
            note = kind
            if scenario == "busy table":
                base = pick(cases, scenario, kind, "baseline", rows).writers["max_wait_ms"]
                note += f" (no DDL: {fmt(base)} ms)"
            table.add_row(scenario, note, f"{rows:,}", f"{pw:.1f} ms", f"{tw:.1f} ms",
                          f"{pw / tw:.0f} x" if tw else "-", f"{p.total_s:.2f} s",
                          f"{t.total_s:.2f} s", f"{t.looks} / {t.lock_timeouts}",
                          "ok" if p.ok and t.ok else "WRONG")
    out.print(table)
    goal_table = Table(title=f"Targets: toolkit writers' longest wait <= {TARGET_MS:.0f} ms "
                             f"(aim {AIM_MS:.0f})")
    for col in ("target", "toolkit", "plain", "met"):
        goal_table.add_column(col)
    for g in goals:
        goal_table.add_row(g["target"], f"{fmt(g['toolkit_ms'])} ms", f"{fmt(g['plain_ms'])} ms",
                           "[green]yes[/green]" if g["met"] else "[red]NO[/red]")
    out.print(goal_table)


# --------------------------------------------------------------------------- main


def run(url: str, sizes: tuple[int, ...], json_path: Path) -> int:
    engine = create_engine(url, pool_size=2, max_overflow=2)
    timer = StatementTimer(engine)
    conninfo = psycopg_conninfo(url)
    try:
        began = time.perf_counter()
        facts = server_facts(engine)
        meta: dict[str, Any] = {
            "sizes": list(sizes), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "psycopg": psycopg.__version__,
            "alembic_integrity": alembic_integrity.__version__,
            "toolkit_settings": asdict(Settings()), "hold_s": HOLD_S, "hold_lead_s": HOLD_LEAD_S,
            "busy_writers": BUSY_WRITERS, "busy_pause_ms": BUSY_PAUSE_S * 1000,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **facts,
        }
        console.log(f"PostgreSQL {facts['server_version']}, {meta['cpu_count']} cores, "
                    f"sizes {', '.join(f'{n:,}' for n in sizes)}")
        cases: list[Case] = []
        for rows in sizes:
            cases.extend(run_size(engine, timer, conninfo, rows))
        goals = targets(cases, sizes)
        meta["run_seconds"] = time.perf_counter() - began
        print_report(cases, goals, meta)
        payload = {"meta": meta, "cases": [asdict(c) for c in cases], "targets": goals,
                   "all_targets_met": all(g["met"] for g in goals),
                   "all_end_states_ok": all(c.ok for c in cases)}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        console.log(f"wrote {json_path} ({meta['run_seconds']:.0f} s)")
        return 0 if payload["all_end_states_ok"] else 1
    finally:
        timer.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only {QUICK_SIZES[0]:,} rows (default sizes: "
                             f"{', '.join(f'{n:,}' for n in DEFAULT_SIZES)})")
    parser.add_argument("--sizes", help="comma-separated row counts (overrides --quick)")
    parser.add_argument("--url", help="SQLAlchemy URL of an existing server to use "
                                      "(default: start a throwaway PostgreSQL)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    sizes = (tuple(int(s) for s in args.sizes.split(",")) if args.sizes
             else QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if args.url:
        return run(args.url, sizes, args.json)
    with throwaway_postgres() as url:
        return run(url, sizes, args.json)


if __name__ == "__main__":
    sys.exit(main())
