"""Gates throughput: clean + rules + parse + execute + gold match over >= 100,000 candidates.

Candidates are teacher-style replies (fenced, with prose, sampled variants, some broken) to
the demo dataset's questions, run against the demo SQLite databases. Prints samples/s for
1, 2 and 4 worker processes (counts above the CPUs this process may use are skipped, and
said so), each count's per-worker efficiency (samples/s ÷ (workers × the 1-worker rate)),
the worker count ``gate_workers`` picks by default here (target: >= 2,000 samples/s on
2 cores) and peak memory.

    .venv/bin/python benchmarks/gates_throughput.py [--n 100000] [--workers 1,2,4]

``--engine postgres --postgres-url postgresql://user@127.0.0.1:5432/bench`` copies the demo's
tables into that (empty) PostgreSQL database first and runs the same candidates there, each query
in a read-only transaction with a round trip per batch of rows: the rate beside SQLite's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

import polars as pl

from fastdistill_assets.config.models import GatesConfig
from fastdistill_assets.datasets import wikisql
from fastdistill_assets.datasets.demo import SPLITS, ensure_demo_dataset
from fastdistill_assets.gates.pipeline import gate_frame, gate_workers
from fastdistill_assets.teacher import rule_teacher

BROKEN = ["", "SELECT FROM WHERE", "DROP TABLE x", "I cannot answer that."]


def build_candidates(n: int, data_dir: Path) -> pl.DataFrame:
    folder = ensure_demo_dataset(data_dir)
    questions = [r for split in SPLITS for r in wikisql.load_split(folder, split)]
    rows, i = [], 0
    while len(rows) < n:
        q = questions[i % len(questions)]
        seed = i // len(questions)
        if i % 50 == 49:
            output = BROKEN[(i // 50) % len(BROKEN)]
        else:
            sql = rule_teacher.predict_sql(q["question"], q["schema"], temperature=1.0 if seed else 0.0, seed=seed)
            output = rule_teacher.format_reply(sql, f"{q['question']}{seed}")
        rows.append({"candidate_id": str(i), "raw_output": output, "error": None, "db_path": q["db_path"],
                     "dialect": "sqlite", "gold_sql": q["gold_sql"], "question": q["question"]})
        i += 1
    return pl.DataFrame(rows, schema_overrides={"error": pl.String})


_PG_TYPES = {"TEXT": "text", "REAL": "double precision", "INTEGER": "bigint"}


def copy_to_postgres(candidates: pl.DataFrame, url: str) -> pl.DataFrame:
    """The demo tables the candidates read, copied into the PostgreSQL database at ``url``; the
    candidates pointed at it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as target:
        for db_path in candidates["db_path"].unique().to_list():
            source = sqlite3.connect(db_path)
            for name, in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                columns = source.execute(f'PRAGMA table_info("{name}")').fetchall()
                target.execute(f'DROP TABLE IF EXISTS "{name}"')
                target.execute(f'CREATE TABLE "{name}" ('
                               + ", ".join(f'"{c[1]}" {_PG_TYPES.get(c[2].upper(), "text")}' for c in columns) + ")")
                rows = source.execute(f'SELECT * FROM "{name}"').fetchall()
                with target.cursor() as cursor:
                    cursor.executemany(f'INSERT INTO "{name}" VALUES ({", ".join(["%s"] * len(columns))})', rows)
            source.close()
    return candidates.with_columns(db_path=pl.lit(url), dialect=pl.lit("postgres"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to time (comma-separated)")
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", help="with --engine postgres: an empty database the demo tables go into")
    args = parser.parse_args()
    if args.engine == "postgres" and not args.postgres_url:
        parser.error("--engine postgres needs --postgres-url")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [int(w) for w in args.workers.split(",")]
    skipped = [w for w in counts if w > cpus]
    counts = [w for w in counts if w <= cpus]
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        candidates = build_candidates(args.n, Path(tmp))
        if args.engine == "postgres":
            candidates = copy_to_postgres(candidates, args.postgres_url)
        print(f"candidates               {candidates.height} built in {time.perf_counter() - t0:.1f} s "
              f"({args.engine})")
        gates = GatesConfig()
        for workers in counts:
            t0 = time.perf_counter()
            out = gate_frame(candidates, gates, workers=workers)
            elapsed = time.perf_counter() - t0
            rates[workers] = candidates.height / elapsed
            kept = int(out["gold_match"].fill_null(False).sum())
            reasons = dict(out.group_by("reject_reason").len().iter_rows())
            print(f"workers={workers:<16}{elapsed:.2f} s  {rates[workers]:,.0f} samples/s  "
                  f"(gold match {kept}, reasons {json.dumps({str(k): v for k, v in reasons.items()})})")
    if 1 in rates:
        for workers, rate in rates.items():
            print(f"efficiency workers={workers:<5}{rate / (workers * rates[1]):.0%} per worker "
                  f"({rate / rates[1]:.2f}x the 1-worker rate)")
    if skipped:
        print(f"skipped                  workers={','.join(map(str, skipped))} (this process may use {cpus} CPUs)")
    print(f"default                  gate_workers(None, {args.n}) = {gate_workers(None, args.n)} workers")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory              {own:.0f} MiB (main), {children:.0f} MiB (largest worker)")
    print("target                   >= 2,000 samples/s on 2 cores")


if __name__ == "__main__":
    main()
