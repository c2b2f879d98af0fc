"""The toolkit's repair (batches, typed before-images) versus the plain statement.

One table of N rows (default 1,000,000), V of them (default 100,000, 10 %, spread
evenly) break ``CHECK (val >= 0)``. Two cases, each timed as the median of R
interleaved rounds on a freshly copied, frozen and warmed table:

* ``update``  plain ``UPDATE t SET val = -val WHERE val < 0`` (one statement) versus
              ``repair(..., apply=True)`` with ``Invalidate(values={"val": Sql("-val")})``;
* ``delete``  plain ``DELETE FROM t WHERE val < 0`` versus ``repair`` with ``Delete()``.

The toolkit run is everything ``repair --apply`` does: catalog reads, the
probe and the validation of the plan, the log and image tables (dropped before
each run, so they are created), the repair record, keyset batches of the
default 10,000 rows, each its own transaction writing the image of every row
it changes (a DELETE: the whole row; an UPDATE: key, old and new value of the
changed column) to the image table, and the summary. Target: toolkit <= 2.5 x
plain in both cases.

Resume: a delete repair is stopped after half its batches (the process stays,
its session lets go, as after a kill between batches), then run again and
timed; it is compared with an uninterrupted repair of the same remaining rows
(a fresh table whose first half was fixed beforehand). Target: <= 2 x.

Client memory: the peak Python allocation (``tracemalloc``) and the growth of
the process's peak RSS (``getrusage``) during the repair, at V and at V/10
violating rows: flat, because rows never travel to the client.

Run: ``.venv/bin/python bench/repair_bench.py [--rows N] [--violating V]
[--batch-size B] [--rounds R] [--url URL] [--json PATH]``. Without ``--url``
a throwaway PostgreSQL is started and deleted afterwards; with it, the script
creates and finally drops ``bench_repair_base``, ``bench_repair`` and the log
schema ``bench_repair_log``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import Engine, create_engine

from alembic_integrity.pg import raw
from alembic_integrity.pg.identifiers import TableName
from alembic_integrity.pg.progress import Progress
from alembic_integrity.pg.throwaway import throwaway_postgres
from alembic_integrity.repair import RepairResult, repair
from alembic_integrity.rules.kinds import CheckRule
from alembic_integrity.rules.metadata import DeclaredRules
from alembic_integrity.rules.policies import Delete, Invalidate, Policy, Sql

DEFAULT_ROWS = 1_000_000
DEFAULT_VIOLATING = 100_000
DEFAULT_BATCH = 10_000
DEFAULT_ROUNDS = 3
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "repair.json"
BASE, WORK, LOG_SCHEMA = "bench_repair_base", "bench_repair", "bench_repair_log"
LOG_TABLE = f"{LOG_SCHEMA}.repair_log"
TARGET_RATIO = 2.5
RESUME_TARGET = 2.0

console = Console(stderr=True)

CASES: dict[str, tuple[str, Policy]] = {
    "update": (f"UPDATE {WORK} SET val = -val WHERE val < 0",
               Invalidate(values={"val": Sql("-val")})),
    "delete": (f"DELETE FROM {WORK} WHERE val < 0", Delete()),
}


def exec_sql(engine: Engine, *statements: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        for statement in statements:
            result = raw.execute(conn, statement)
            rows = [tuple(r) for r in result] if result.returns_rows else []
    return rows


def build_base(engine: Engine, rows: int, violating: int) -> float:
    """N rows, every (N/V)-th one negative; the copy source of every round."""
    every = max(rows // violating, 1)
    began = time.perf_counter()
    exec_sql(engine, f"DROP TABLE IF EXISTS {BASE}",
             f"CREATE TABLE {BASE} AS SELECT g::bigint AS id, "
             f"(CASE WHEN g % {every} = 0 THEN -g ELSE g END)::integer AS val, "
             "(ARRAY['new', 'open', 'done'])[1 + g % 3] AS status, md5(g::text) AS payload, "
             "timestamptz '2024-01-01' + g * interval '1 second' AS created_at "
             f"FROM generate_series(1, {rows}) g")
    return time.perf_counter() - began


def fresh_table(engine: Engine) -> None:
    """A packed, frozen, analysed, warmed copy; no log; a checkpoint so both sides
    start with the same amount of WAL to write."""
    exec_sql(engine, f"DROP TABLE IF EXISTS {WORK}", f"DROP SCHEMA IF EXISTS {LOG_SCHEMA} CASCADE",
             f"CREATE TABLE {WORK} AS SELECT * FROM {BASE}",
             f"ALTER TABLE {WORK} ADD PRIMARY KEY (id)",
             f"VACUUM (FREEZE, ANALYZE) {WORK}", f"SELECT count(*) FROM {WORK}", "CHECKPOINT")


def checksum(engine: Engine) -> str:
    return exec_sql(engine, f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {WORK} t")[0][0]


def rules(policy: Policy) -> DeclaredRules:
    return DeclaredRules(rules=[CheckRule("ck_bench_val", TableName(WORK), "val >= 0", (policy,))])


def run_plain(engine: Engine, statement: str) -> float:
    began = time.perf_counter()
    exec_sql(engine, statement)
    return time.perf_counter() - began


def run_toolkit(engine: Engine, policy: Policy, batch: int) -> tuple[float, dict[str, Any]]:
    """Time one repair; measure the client's memory around it."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    began = time.perf_counter()
    result = repair(engine, rules(policy), apply=True, batch_size=batch, log_table=LOG_TABLE)
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return elapsed, {"changed": result.changed, "repair_id": result.repair_id,
                     "python_peak_kb": round(peak / 1024, 1),
                     "rss_peak_growth_kb": rss_after - rss_before,
                     "summary": _summary(result)}


def _summary(result: RepairResult) -> dict[str, Any]:
    return {"changed": result.changed, "for_person": result.for_person}


def check_toolkit(engine: Engine, violating: int, plain_sum: str | None) -> dict[str, Any]:
    """Every violating row repaired, each with a before-image in the log; same end state."""
    left = exec_sql(engine, f"SELECT count(*) FROM {WORK} WHERE val < 0")[0][0]
    image = exec_sql(engine, f"SELECT DISTINCT image_table FROM {LOG_TABLE} "
                             "WHERE image_table IS NOT NULL")[0][0]
    logged = exec_sql(engine, f"SELECT sum(rows) FROM {LOG_TABLE}")[0][0]
    imaged = exec_sql(engine, f'SELECT count(*) FROM {LOG_SCHEMA}."{image}"')[0][0]
    same = plain_sum is None or checksum(engine) == plain_sum
    return {"left": left, "logged": logged, "with_before_image": imaged,
            "ok": left == 0 and logged == imaged == violating and same,
            "same_end_state_as_plain": same}


def time_case(engine: Engine, case: str, rounds: int, batch: int,
              violating: int) -> dict[str, Any]:
    statement, policy = CASES[case]
    plain: list[float] = []
    toolkit: list[float] = []
    memory: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for round_no in range(rounds):
        fresh_table(engine)
        plain.append(run_plain(engine, statement))
        plain_sum = checksum(engine) if round_no == 0 else None
        fresh_table(engine)
        elapsed, mem = run_toolkit(engine, policy, batch)
        toolkit.append(elapsed)
        memory.append(mem)
        checks.append(check_toolkit(engine, violating, plain_sum))
        console.log(f"{case} round {round_no + 1}: plain {plain[-1]:.2f} s, "
                    f"toolkit {toolkit[-1]:.2f} s")
    ratio = statistics.median(toolkit) / statistics.median(plain)
    return {"plain_s": plain, "toolkit_s": toolkit, "plain_median_s": statistics.median(plain),
            "toolkit_median_s": statistics.median(toolkit), "ratio": ratio,
            "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
            "memory": memory, "checks": checks, "ok": all(c["ok"] for c in checks)}


def memory_scaling(engine: Engine, rows: int, violating: int, batch: int) -> dict[str, Any]:
    """The same update repair at V/10 violating rows: the client's peak should not move."""
    build_base(engine, rows, max(violating // 10, 1))
    fresh_table(engine)
    _, small = run_toolkit(engine, CASES["update"][1], batch)
    return {"violating": max(violating // 10, 1), **small}


class Stop(Exception):
    """Raised from the progress callback: the run stops between two batches."""


def resume_case(engine: Engine, violating: int, batch: int) -> dict[str, Any]:
    """Stop a delete repair half-way, time the resumed run, and an uninterrupted run of
    the same remaining rows on a fresh table."""
    policy = CASES["delete"][1]
    fresh_table(engine)
    half = violating // 2

    def stop(p: Progress) -> None:
        if p.done >= half:
            raise Stop

    try:
        repair(engine, rules(policy), apply=True, batch_size=batch, log_table=LOG_TABLE,
               progress=stop)
        raise AssertionError("the repair was not stopped")
    except Stop:
        pass
    cursor = exec_sql(engine, f"SELECT max((cursor->>'id')::bigint) FROM {LOG_TABLE}")[0][0]
    remaining = exec_sql(engine, f"SELECT count(*) FROM {WORK} WHERE val < 0")[0][0]
    began = time.perf_counter()
    resumed = repair(engine, rules(policy), apply=True, batch_size=batch, log_table=LOG_TABLE)
    resume_s = time.perf_counter() - began
    ok = resumed.resumed and exec_sql(engine, f"SELECT count(*) FROM {WORK} "
                                              "WHERE val < 0")[0][0] == 0
    fresh_table(engine)
    exec_sql(engine, f"DELETE FROM {WORK} WHERE val < 0 AND id <= {int(cursor)}",
             f"VACUUM (FREEZE, ANALYZE) {WORK}", "CHECKPOINT")
    began = time.perf_counter()
    repair(engine, rules(policy), apply=True, batch_size=batch, log_table=LOG_TABLE)
    straight_s = time.perf_counter() - began
    ratio = resume_s / straight_s
    return {"remaining": remaining, "resume_s": resume_s, "uninterrupted_remaining_s": straight_s,
            "ratio": ratio, "target_ratio": RESUME_TARGET, "meets_target": ratio <= RESUME_TARGET,
            "ok": ok}


def print_report(results: dict[str, Any], meta: dict[str, Any]) -> None:
    table = RichTable(title=f"repair vs plain statement: {meta['rows']:,} rows, "
                            f"{meta['violating']:,} violating, batch {meta['batch_size']:,}, "
                            f"median of {meta['rounds']}")
    for column in ("case", "plain (s)", "toolkit (s)", "ratio", "target", "client peak "
                   "(Python)", "client RSS growth", "checks"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case, found in results["cases"].items():
        mem = found["memory"][-1]  # steady state: the first call also pays one-time imports
        table.add_row(case, f"{found['plain_median_s']:.2f}", f"{found['toolkit_median_s']:.2f}",
                      f"{found['ratio']:.2f} x", f"<= {TARGET_RATIO:g} x "
                      f"{'ok' if found['meets_target'] else 'MISSED'}",
                      f"{mem['python_peak_kb']:,.0f} KB", f"{mem['rss_peak_growth_kb']:,} KB",
                      "ok" if found["ok"] else "FAILED")
    small = results["memory_scaling"]
    table.add_row(f"update, {small['violating']:,} violating", "", "", "", "",
                  f"{small['python_peak_kb']:,.0f} KB", f"{small['rss_peak_growth_kb']:,} KB",
                  "")
    resume = results["resume"]
    table.add_row(f"resume, {resume['remaining']:,} left", "",
                  f"{resume['resume_s']:.2f}", f"{resume['ratio']:.2f} x",
                  f"<= {RESUME_TARGET:g} x of {resume['uninterrupted_remaining_s']:.2f} s "
                  f"{'ok' if resume['meets_target'] else 'MISSED'}", "", "",
                  "ok" if resume["ok"] else "FAILED")
    Console(width=max(Console().width, 120)).print(table)


def server_facts(engine: Engine) -> dict[str, Any]:
    version = exec_sql(engine, "SHOW server_version")[0][0]
    return {"server_version": version, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "machine": platform.machine()}


def run(url: str, rows: int, violating: int, batch: int, rounds: int,
        json_path: Path) -> int:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        console.log(f"building {rows:,} rows ({violating:,} violating) in {BASE}")
        build_seconds = build_base(engine, rows, violating)
        meta = {"rows": rows, "violating": violating, "batch_size": batch, "rounds": rounds,
                "build_s": build_seconds, **server_facts(engine)}
        cases = {case: time_case(engine, case, rounds, batch, violating) for case in CASES}
        resume = resume_case(engine, violating, batch)
        results = {"cases": cases, "resume": resume,
                   "memory_scaling": memory_scaling(engine, rows, violating, batch)}
        print_report(results, meta)
        payload = {"benchmark": "repair", **meta, **results}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        console.log(f"wrote {json_path}")
        ok = all(c["ok"] for c in cases.values()) and resume["ok"]
        met = all(c["meets_target"] for c in cases.values()) and resume["meets_target"]
        return 0 if ok and met else 1
    finally:
        exec_sql(engine, f"DROP TABLE IF EXISTS {WORK}", f"DROP TABLE IF EXISTS {BASE}",
                 f"DROP SCHEMA IF EXISTS {LOG_SCHEMA} CASCADE")
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--violating", type=int, default=DEFAULT_VIOLATING)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--url", help="use this server instead of a throwaway one")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    go: Callable[[str], int] = lambda url: run(  # noqa: E731
        url, args.rows, args.violating, args.batch_size, args.rounds, args.json)
    if args.url:
        return go(args.url)
    with throwaway_postgres() as url:
        return go(url)


if __name__ == "__main__":
    sys.exit(main())
