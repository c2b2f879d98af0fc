"""The audit's cost per table as schemas grow, against a hand-written floor, in one run.

A schema of N small tables (N = 40, 400, 4,000 by default), each with a CHECK
(``qty > 0``), a NOT NULL (``note``) and a FOREIGN KEY (``ref_id`` onto one
shared ``bench_ref``) declared in the models and absent from the database, so
every rule must be counted. Every tenth table has a few violating rows. We time
(median of 3 interleaved rounds, after a warm-up):

* ``audit``             ``audit()`` end to end, with the first 5 violating keys per rule;
* ``audit, no sample``  the same with ``sample=0``;
* ``floor``             per table, on one connection: one ``count(*) FILTER`` for the
                        CHECK and the NOT NULL, and one FK anti-join; nothing else.

The figure judged is the marginal cost per table (least-squares slope of time
over N): target audit <= 3 x the floor's. Counts are checked against the floor.

Run: ``.venv/bin/python bench/audit_scale_bench.py [--tables 40,400,4000] [--rows 20]
[--url URL] [--json PATH]``. Without ``--url`` a throwaway PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import (
    CheckConstraint,
    Column,
    Engine,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
)

from alembic_integrity.audit.core import audit
from alembic_integrity.pg import raw
from alembic_integrity.pg.throwaway import throwaway_postgres
from alembic_integrity.rules.metadata import DeclaredRules, rules_from_metadata

DEFAULT_TABLES = (40, 400, 4000)
DEFAULT_ROWS = 20
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "audit_scale.json"
SCHEMA = "bench_scale"
REPEATS = 3
SAMPLE = 5
TARGET_RATIO = 3.0

console = Console(stderr=True)


def table_name(i: int) -> str:
    return f"t{i:05d}"


def build(engine: Engine, tables: int, rows: int) -> float:
    """``tables`` tables of ``rows`` rows; every tenth one breaks each rule a few times."""
    began = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        raw.execute(conn, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        raw.execute(conn, f"CREATE SCHEMA {SCHEMA}")
        raw.execute(conn, f"CREATE TABLE {SCHEMA}.bench_ref (id integer PRIMARY KEY)")
        raw.execute(conn, f"INSERT INTO {SCHEMA}.bench_ref SELECT generate_series(1, 100)")
        for start in range(0, tables, 250):  # one transaction per 250: lock table room
            raw.execute(conn, f"""
            DO $$ BEGIN
            FOR i IN {start}..{min(start + 250, tables) - 1} LOOP
              EXECUTE format('CREATE TABLE {SCHEMA}.%I (id integer PRIMARY KEY, qty integer,
                              note text, ref_id integer)', 't' || lpad(i::text, 5, '0'));
              EXECUTE format('INSERT INTO {SCHEMA}.%I SELECT g,
                  CASE WHEN %L AND g %% 7 = 1 THEN -1 ELSE g END,
                  CASE WHEN %L AND g %% 9 = 2 THEN NULL ELSE ''n'' END,
                  CASE WHEN %L AND g %% 6 = 3 THEN 1000 + g ELSE 1 + g %% 100 END
                  FROM generate_series(1, {rows}) g', 't' || lpad(i::text, 5, '0'),
                  i % 10 = 0, i % 10 = 0, i % 10 = 0);
            END LOOP; END $$""")
        raw.execute(conn, "ANALYZE")
    return time.perf_counter() - began


def models(tables: int) -> MetaData:
    metadata = MetaData()
    Table("bench_ref", metadata, Column("id", Integer, primary_key=True), schema=SCHEMA)
    for i in range(tables):
        Table(
            table_name(i), metadata,
            Column("id", Integer, primary_key=True),
            Column("qty", Integer),
            Column("note", Text, nullable=False),
            Column("ref_id", Integer),
            CheckConstraint("qty > 0", name=f"ck_{table_name(i)}_qty"),
            ForeignKeyConstraint(["ref_id"], [f"{SCHEMA}.bench_ref.id"],
                                 name=f"fk_{table_name(i)}_ref"),
            schema=SCHEMA,
        )  # fmt: skip
    return metadata


def floor(engine: Engine, tables: int) -> int:
    """The least an audit can do: two statements per table on one connection."""
    total = 0
    with engine.connect() as conn:
        for i in range(tables):
            t = f"{SCHEMA}.{table_name(i)}"
            row = raw.execute(conn, f"SELECT count(*) FILTER (WHERE NOT (qty > 0)), "
                                    f"count(*) FILTER (WHERE note IS NULL) FROM {t} AS t").one()
            fk = raw.execute(conn, f"SELECT count(*) FROM {t} AS t LEFT JOIN "
                                   f"{SCHEMA}.bench_ref AS r ON r.id = t.ref_id "
                                   "WHERE t.ref_id IS NOT NULL AND r.id IS NULL").scalar_one()
            total += int(row[0]) + int(row[1]) + int(fk)
        conn.rollback()
    return total


def audited(engine: Engine, declared: DeclaredRules, sample: int) -> Callable[[], int]:
    def go() -> int:
        report = audit(engine, declared, sample=sample)
        assert not report.problems, report.problems[:3]
        return report.violations_total
    return go


def time_size(engine: Engine, tables: int) -> dict[str, dict[str, Any]]:
    declared = rules_from_metadata(models(tables))
    variants: dict[str, Callable[[], int]] = {
        "audit": audited(engine, declared, SAMPLE),
        "audit, no sample": audited(engine, declared, 0),
        "floor": lambda: floor(engine, tables),
    }
    results: dict[str, dict[str, Any]] = {n: {"violations": fn(), "runs_s": []}
                                          for n, fn in variants.items()}
    for _ in range(REPEATS):
        for name, fn in variants.items():
            began = time.perf_counter()
            fn()
            results[name]["runs_s"].append(time.perf_counter() - began)
    for r in results.values():
        r["median_s"] = statistics.median(r["runs_s"])
    return results


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares seconds per table."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)


def run(url: str, sizes: list[int], rows: int, json_path: Path) -> int:
    engine = create_engine(url, pool_size=2)
    try:
        with engine.connect() as conn:
            version = raw.execute(conn, "SHOW server_version").scalar_one()
        console.log(f"building {max(sizes):,} tables of {rows} rows")
        build_s = build(engine, max(sizes), rows)
        by_size = {}
        for size in sizes:
            console.log(f"timing {size} tables")
            by_size[size] = time_size(engine, size)
        names = list(next(iter(by_size.values())))
        slopes = {n: slope([(s, by_size[s][n]["median_s"]) for s in sizes]) for n in names}
        ratios = {n: slopes[n] / slopes["floor"] for n in names}
        table = RichTable(title=f"audit at scale: {rows} rows per table, CHECK + NOT NULL + FK "
                                f"each - PostgreSQL {version}, {os.cpu_count()} cores "
                                f"(median of {REPEATS})")
        table.add_column("variant")
        for size in sizes:
            table.add_column(f"{size} tables ms", justify="right")
        table.add_column("ms / table", justify="right")
        table.add_column("x floor / table", justify="right")
        for n in names:
            table.add_row(n, *[f"{by_size[s][n]['median_s'] * 1000:.0f}" for s in sizes],
                          f"{slopes[n] * 1000:.3f}", f"{ratios[n]:.2f}")
        out = Console()
        out.print(table)
        met = ratios["audit"] <= TARGET_RATIO
        out.print(f"target audit <= {TARGET_RATIO} x floor per table: {ratios['audit']:.2f} x "
                  f"({'met' if met else 'MISSED'})")
        consistent = all(len({r["violations"] for r in by_size[s].values()}) == 1
                         for s in sizes)
        payload = {
            "meta": {"sizes": sizes, "rows_per_table": rows, "repeats": REPEATS,
                     "sample": SAMPLE, "server_version": version, "cpu_count": os.cpu_count(),
                     "machine": platform.machine(), "build_seconds": build_s,
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "by_size": by_size, "seconds_per_table": slopes, "ratio_per_table": ratios,
            "target_ratio": TARGET_RATIO, "target_met": met, "counts_match_floor": consistent,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        console.log(f"wrote {json_path}")
        return 0 if consistent else 1
    finally:
        with contextlib.suppress(Exception), engine.connect().execution_options(
                isolation_level="AUTOCOMMIT") as conn:
            raw.execute(conn, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(map(str, DEFAULT_TABLES)),
                        help="comma-separated schema sizes (default 40,400,4000)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows per table")
    parser.add_argument("--url", help="SQLAlchemy URL of an existing server (the schema "
                                      f"{SCHEMA} is created and dropped)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.tables.split(","))
    if len(sizes) < 2:
        parser.error("--tables needs at least two sizes")
    if args.url:
        return run(args.url, sizes, args.rows, args.json)
    with throwaway_postgres() as url:
        return run(url, sizes, args.rows, args.json)


if __name__ == "__main__":
    sys.exit(main())
