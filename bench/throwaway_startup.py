"""Throwaway server, start to first ``select 1``: warm (template cached) vs cold (initdb).

Usage::

    .venv/bin/python bench/throwaway_startup.py [--runs 9]

Prints a table and writes ``bench/results/throwaway_startup.json``. The runs alternate
warm and cold, so both see the same machine load:

* **warm**: the cache (a private directory for this benchmark, warmed once before
  timing) holds the initdb'd template for these binaries, so the start copies it;
* **cold**: an empty cache directory per run, so the start runs initdb (and stores
  the template, as a first start on a machine does);
* **before**: how every start went before the template cache: initdb, cluster on disk
  (cache off, ``TMPDIR=/tmp``).

Imports of SQLAlchemy and psycopg are done before timing (every session pays them
anyway); each run ends with the server stopped and deleted. Local binaries only
(``ALEMBIC_INTEGRITY_PG_BINDIR`` picks them; Docker has no template cache).
Target: warm median <= 0.15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg  # noqa: F401  (warm import, see docstring)
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as _dialect  # noqa: F401
from sqlalchemy.pool import NullPool

from alembic_integrity.pg.throwaway import ThrowawayServer
from alembic_integrity.pg.throwaway.template import CACHE_ENV

RESULTS = Path(__file__).resolve().parent / "results" / "throwaway_startup.json"
TARGET_WARM_S = 0.15


def one_run(cache_dir: Path | None) -> dict[str, float | str]:
    """One start to first query with ``cache_dir`` as the template cache (None: off, on disk)."""
    os.environ[CACHE_ENV] = str(cache_dir) if cache_dir is not None else "off"
    if cache_dir is None:
        os.environ["TMPDIR"] = "/tmp"
    else:
        os.environ.pop("TMPDIR", None)
    began = time.perf_counter()
    with ThrowawayServer(docker=False) as server:
        engine = sa.create_engine(server.url, poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1")).scalar_one()
            first_query = time.perf_counter() - began
            version = conn.execute(sa.text("show server_version")).scalar_one()
        engine.dispose()
        timings = dict(server.timings)
        stop_began = time.perf_counter()
    return {
        "first_query_s": first_query,
        "data_dir_s": timings.get("initdb", float("nan")),
        "template_copied": timings.get("template", float("nan")) == 1.0,
        "postgres_ready_s": timings.get("postgres", float("nan")),
        "stop_s": time.perf_counter() - stop_began,
        "server_version": version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each kind (default 9)")
    args = parser.parse_args()

    previous = os.environ.get(CACHE_ENV)
    previous_tmp = os.environ.get("TMPDIR")
    scratch = Path(tempfile.mkdtemp(prefix="throwaway-bench-"))
    try:
        warm_cache = scratch / "warm"
        one_run(warm_cache)  # builds the template: not timed
        warm: list[dict[str, float | str]] = []
        cold: list[dict[str, float | str]] = []
        before: list[dict[str, float | str]] = []
        for i in range(args.runs):
            warm.append(one_run(warm_cache))
            cold_cache = scratch / f"cold-{i}"
            cold.append(one_run(cold_cache))
            shutil.rmtree(cold_cache, ignore_errors=True)
            before.append(one_run(None))
    finally:
        for name, value in ((CACHE_ENV, previous), ("TMPDIR", previous_tmp)):
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(scratch, ignore_errors=True)
    assert all(r["template_copied"] for r in warm)
    assert not any(r["template_copied"] for r in cold + before)

    print(f"{'run':>3}  {'warm':>7} {'(copy':>6} {'+ start)':>8}  {'cold':>7} {'(initdb':>7} "
          f"{'+ start)':>8}  {'before':>7} {'(initdb':>7} {'+ start)':>8}")
    for i, runs in enumerate(zip(warm, cold, before, strict=True), 1):
        print(f"{i:>3}" + "".join(f"  {r['first_query_s']:>6.3f}s {r['data_dir_s']:>7.3f} "
                                  f"{r['postgres_ready_s']:>8.3f}" for r in runs))
    kinds = (("warm", warm), ("cold", cold), ("before", before))
    summary = {kind: _stats(runs) for kind, runs in kinds}
    ratio = summary["warm"]["median_s"] / summary["cold"]["median_s"]
    ratio_before = summary["warm"]["median_s"] / summary["before"]["median_s"]
    met = "met" if summary["warm"]["median_s"] <= TARGET_WARM_S else "NOT met"
    print(f"median to first query: warm {summary['warm']['median_s']:.3f} s, cold "
          f"{summary['cold']['median_s']:.3f} s, before {summary['before']['median_s']:.3f} s "
          f"(warm/cold {ratio:.2f}, warm/before {ratio_before:.2f}); "
          f"PostgreSQL {warm[0]['server_version']}; target warm <= {TARGET_WARM_S} s: {met}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "throwaway_startup",
        "measures": "enter ThrowawayServer -> first `select 1`; warm = template copied, "
                    "cold = initdb (empty cache), before = initdb on disk, no cache",
        "target_warm_median_s": TARGET_WARM_S,
        "summary": summary,
        "warm_over_cold": ratio,
        "warm_over_before": ratio_before,
        "warm": warm,
        "cold": cold,
        "before": before,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]},
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _stats(runs: list[dict[str, float | str]]) -> dict[str, float]:
    firsts = [float(r["first_query_s"]) for r in runs]
    return {"min_s": min(firsts), "median_s": statistics.median(firsts), "max_s": max(firsts)}


if __name__ == "__main__":
    main()
