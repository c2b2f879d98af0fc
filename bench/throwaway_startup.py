"""How long from entering the throwaway-server context manager to the first ``select 1``?

Usage::

    .venv/bin/python bench/throwaway_startup.py [--runs 5] [--docker | --no-docker]

Prints a table and writes ``bench/results/throwaway_startup.json``. Imports of
SQLAlchemy and psycopg are done before timing (every test session pays them
anyway); each run starts a brand-new server (initdb included) and ends with it
stopped and deleted. ``ThrowawayServer`` as a context manager is exactly what
``throwaway_postgres()`` wraps; we use it to also report the initdb / postgres
split and the time to stop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import psycopg  # noqa: F401  (warm import, see docstring)
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as _dialect  # noqa: F401
from sqlalchemy.pool import NullPool

from alembic_integrity.pg.throwaway import ThrowawayServer

RESULTS = Path(__file__).resolve().parent / "results" / "throwaway_startup.json"


def one_run(docker: bool | None) -> dict[str, float | str]:
    began = time.perf_counter()
    with ThrowawayServer(docker=docker) as server:
        engine = sa.create_engine(server.url, poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1")).scalar_one()
            first_query = time.perf_counter() - began
            version = conn.execute(sa.text("show server_version")).scalar_one()
        engine.dispose()
        stop_began = time.perf_counter()
        mode = server.mode or "?"
        timings = dict(server.timings)
    stop = time.perf_counter() - stop_began
    return {
        "first_query_s": first_query,
        "initdb_s": timings.get("initdb", float("nan")),
        "postgres_ready_s": timings.get("postgres", float("nan")),
        "stop_s": stop,
        "mode": mode,
        "server_version": version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--docker", dest="docker", action="store_true", default=None)
    group.add_argument("--no-docker", dest="docker", action="store_false")
    args = parser.parse_args()

    runs = [one_run(args.docker) for _ in range(args.runs)]
    firsts = [float(r["first_query_s"]) for r in runs]
    print(f"{'run':>3}  {'first query':>11}  {'initdb':>7}  {'postgres':>8}  {'stop':>6}  mode")
    for i, r in enumerate(runs, 1):
        print(
            f"{i:>3}  {r['first_query_s']:>10.3f}s  {r['initdb_s']:>6.3f}s  "
            f"{r['postgres_ready_s']:>7.3f}s  {r['stop_s']:>5.3f}s  {r['mode']}"
        )
    summary = {
        "min_s": min(firsts),
        "median_s": statistics.median(firsts),
        "max_s": max(firsts),
    }
    print(
        f"first query: min {summary['min_s']:.3f} s, median {summary['median_s']:.3f} s, "
        f"max {summary['max_s']:.3f} s over {len(runs)} runs"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "throwaway_startup",
                "measures": "enter ThrowawayServer context -> first `select 1` returned",
                "runs": runs,
                "summary": summary,
                "machine": {
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
