"""Peak memory and time of the gates on hostile teacher SQL, with the shipped execution limits.

Each query goes through the gate step's own per-candidate function (`gate_row`, the clean, rule,
parse, execute and grounding gates) against a real SQLite and DuckDB file holding a 2,000-row
table of 1 KB strings. Queries run one after another in this one process, as a gate worker runs
them; after each the process's peak RSS so far is printed, so the query that raised it shows. DuckDB
runs in an engine process of its own (capped memory); its peak is printed at the end.

    .venv/bin/python benchmarks/hostile_memory.py [--timeout-ms 2000] [--json]

`--json` prints one JSON object (name -> verdict, seconds; peak_rss_mib, engine_peak_rss_mib) for the tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import duckdb

from fastdistill_assets.config.models import ExecutionGates, GatesConfig
from fastdistill_assets.gates.pipeline import gate_row
from fastdistill_assets.sqlsafe.execute import Executor

BIG_ROWS, BIG_TEXT = 2_000, 1_000
RANGE_10K = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10000)"
HOSTILE = {  # name: (dialect, sql)
    "duckdb_repeat_1mb_x10k": ("duckdb", "SELECT repeat('x', 999000) FROM range(10000)"),
    "duckdb_repeat_computed": ("duckdb", "SELECT repeat(s, n) FROM big"),
    "duckdb_printf_width": ("duckdb", "SELECT printf('%0999999d', n) FROM big"),
    "duckdb_scalar_range_1e8": ("duckdb", "SELECT range(100000000)"),
    "duckdb_rows_1e8": ("duckdb", "SELECT * FROM range(100000000)"),
    "duckdb_wide_cartesian": ("duckdb", "SELECT a.s, b.s, c.s FROM big a, big b, big c"),
    "duckdb_sorted_cartesian": ("duckdb", "SELECT a.s || b.s FROM big a, big b ORDER BY random()"),
    "duckdb_string_agg_2gb": ("duckdb", "SELECT string_agg(a.s, ',') FROM big a, big b"),
    "duckdb_broadcast_aggregate": ("duckdb", "SELECT (SELECT string_agg(s, '') FROM big) FROM big"),
    "duckdb_window_list": ("duckdb", "SELECT list(s) OVER () FROM big"),
    "duckdb_list_agg_2gb": ("duckdb", "SELECT list(a.s) FROM big a, big b"),
    "duckdb_doubling_cte": ("duckdb", "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r "
                                      "WHERE length(s) < 4000000000) SELECT max(length(s)) FROM r"),
    "duckdb_runaway_md5": ("duckdb", "SELECT count(DISTINCT md5(a.s || b.n || c.n)) FROM big a, big b, big c"),
    "sqlite_zeroblob_1mb_x10k": ("sqlite", f"{RANGE_10K} SELECT zeroblob(999000) FROM r"),
    "sqlite_zeroblob_computed": ("sqlite", f"{RANGE_10K} SELECT zeroblob(n * 100000) FROM r"),
    "sqlite_wide_cartesian": ("sqlite", "SELECT a.s || b.s || c.s FROM big a, big b, big c"),
    "sqlite_sorted_cartesian": ("sqlite", "SELECT a.s || b.s FROM big a, big b ORDER BY random()"),
    "sqlite_group_concat_2gb": ("sqlite", "SELECT group_concat(a.s) FROM big a, big b"),
    "sqlite_broadcast_aggregate": ("sqlite", "SELECT (SELECT group_concat(s, '') FROM big) FROM big"),
    "sqlite_runaway_cte": ("sqlite", "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) "
                                     "SELECT count(*) FROM r"),
}


def make_databases(folder: Path) -> dict[str, Path]:
    """A SQLite and a DuckDB file, each with ``big(n INTEGER, s TEXT)``: BIG_ROWS rows of BIG_TEXT chars."""
    rows = [(n, f"{n:06d}" + "x" * (BIG_TEXT - 6)) for n in range(BIG_ROWS)]
    sqlite_path, duck_path = folder / "hostile.sqlite", folder / "hostile.duckdb"
    with sqlite3.connect(sqlite_path) as db:
        db.execute("CREATE TABLE big (n INTEGER, s TEXT)")
        db.executemany("INSERT INTO big VALUES (?, ?)", rows)
    db.close()
    duck = duckdb.connect(str(duck_path))
    duck.execute(f"CREATE TABLE big AS SELECT range AS n, lpad(range::TEXT, 6, '0') || repeat('x', {BIG_TEXT - 6}) "
                 f"AS s FROM range({BIG_ROWS})")
    duck.close()
    return {"sqlite": sqlite_path, "duckdb": duck_path}


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """The peak RSS of this process (its memory's high-water mark, ``VmHWM``: ``ru_maxrss`` would
    carry over the peak of the process that started it, e.g. a large pytest) or, for
    ``RUSAGE_CHILDREN``, of its largest ended child."""
    if who == resource.RUSAGE_SELF:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024   # kB
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout-ms", type=int, default=ExecutionGates().timeout_ms)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    gates = GatesConfig(execution=ExecutionGates(timeout_ms=args.timeout_ms))
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as folder, Executor(gates.execution) as executor:
        paths = make_databases(Path(folder))
        baseline = peak_rss_mib()
        if not args.json:
            print(f"execution limits: {gates.execution.model_dump()}; peak RSS before: {baseline:.0f} MiB")
        for name, (dialect, sql) in HOSTILE.items():
            row = {"error": None, "raw_output": sql, "dialect": dialect, "db_path": str(paths[dialect]),
                   "gold_sql": None, "question": "hostile"}
            started = time.perf_counter()
            verdict = gate_row(row, gates, False, executor)
            seconds = time.perf_counter() - started
            outcome = verdict["exec_error"] or verdict["reject_reason"] or "kept"
            results[name] = {"verdict": outcome, "seconds": round(seconds, 2), "peak_rss_mib": round(peak_rss_mib())}
            if not args.json:
                print(f"{name:28s} {outcome:16s} {seconds:6.2f} s ({seconds * 1000 / args.timeout_ms:4.2f}x the "
                      f"limit)  peak RSS so far {peak_rss_mib():6.0f} MiB  ({(verdict['exec_error_detail'] or '')[:60]})")
    peak, engine = peak_rss_mib(), peak_rss_mib(resource.RUSAGE_CHILDREN)  # DuckDB's engine processes, ended
    if args.json:
        print(json.dumps({"queries": results, "peak_rss_mib": round(peak), "engine_peak_rss_mib": round(engine),
                          "timeout_ms": args.timeout_ms}))
    else:
        print(f"peak RSS of the whole suite: {peak:.0f} MiB in the gate process (before it: {baseline:.0f} MiB), "
              f"{engine:.0f} MiB in DuckDB's engine process; together at most {peak + engine:.0f} MiB")


if __name__ == "__main__":
    main()
