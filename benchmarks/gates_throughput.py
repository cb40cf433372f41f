"""Gates throughput: clean + rules + parse + execute + gold match over >= 100,000 candidates.

Candidates are teacher-style replies (fenced, with prose, sampled variants, some broken) to
the demo dataset's questions, run against the demo SQLite databases. Prints samples/s for
one and for two worker processes (target: >= 2,000 samples/s on 2 cores) and peak memory.

    .venv/bin/python benchmarks/gates_throughput.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import polars as pl

from fastdistill_assets.config import GatesConfig
from fastdistill_assets.datasets import wikisql
from fastdistill_assets.datasets.demo import SPLITS, ensure_demo_dataset
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.teacher import baseline

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
            sql = baseline.predict_sql(q["question"], q["schema"], temperature=1.0 if seed else 0.0, seed=seed)
            output = baseline.format_reply(sql, f"{q['question']}{seed}")
        rows.append({"candidate_id": str(i), "raw_output": output, "error": None, "db_path": q["db_path"],
                     "dialect": "sqlite", "gold_sql": q["gold_sql"]})
        i += 1
    return pl.DataFrame(rows, schema_overrides={"error": pl.String})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        candidates = build_candidates(args.n, Path(tmp))
        print(f"candidates               {candidates.height} built in {time.perf_counter() - t0:.1f} s")
        gates = GatesConfig()
        for workers in (1, 2):
            t0 = time.perf_counter()
            out = gate_frame(candidates, gates, workers=workers)
            elapsed = time.perf_counter() - t0
            kept = int(out["gold_match"].fill_null(False).sum())
            reasons = dict(out.group_by("reject_reason").len().iter_rows())
            print(f"workers={workers}                {elapsed:.2f} s  {candidates.height / elapsed:,.0f} samples/s  "
                  f"(gold match {kept}, reasons {json.dumps({str(k): v for k, v in reasons.items()})})")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory              {own:.0f} MiB (main), {children:.0f} MiB (largest worker)")
    print("target                   >= 2,000 samples/s on 2 cores")


if __name__ == "__main__":
    main()
