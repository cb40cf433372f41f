"""WikiSQL in the official release's layout: what lower-case detection buys, and what it costs.

Copies the demo dataset and lower-cases the text in its databases, as the official Salesforce
release stores it (the tables files keep the original case). Loads every split three ways and
prints, for each: questions, gold queries returning no rows or only NULLs (``gold_empty``),
gold queries that match the gold rows of the original-case data, load time and rows/s:

* ``detected`` (``lower_values: null``, the default): the loader compares tables file and DB;
* ``false`` (the old default): string conditions keep their case and miss the lower-cased text;
* ``true``: the explicit override.

Then the cost of the preflight that ``fastdistill run new`` runs on that dataset.

    .venv/bin/python benchmarks/official_wikisql.py
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from fastdistill_assets.config.models import (
    DatasetConfig,
    FrozenRun,
    GatesConfig,
    RunConfig,
)
from fastdistill_assets.config.registry import freeze
from fastdistill_assets.datasets.demo import ensure_demo_dataset
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.runtime.preflight import check_dataset
from fastdistill_assets.sqlsafe.execute import Executor

SPLITS = ["train", "dev", "test"]


def lower_case_databases(folder: Path) -> None:
    for split in SPLITS:
        with sqlite3.connect(folder / f"{split}.db") as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows = db.execute(f'SELECT rowid, * FROM "{table}"').fetchall()
                columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
                sets = ", ".join(f"{c} = ?" for c in columns)
                db.executemany(f'UPDATE "{table}" SET {sets} WHERE rowid = ?',
                               [[v.lower() if isinstance(v, str) else v for v in row[1:]] + [row[0]] for row in rows])


def gold_rows(frame, executor: Executor) -> list:
    return [executor.run(p, "sqlite", sql).rows if sql else None
            for p, sql in zip(frame["db_path"], frame["gold_sql"], strict=True)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        original = ensure_demo_dataset(Path(tmp) / "demo")
        official = Path(tmp) / "official"
        shutil.copytree(original, official)
        lower_case_databases(official)
        executor = Executor()
        reference = load_dataset(DatasetConfig(kind="wikisql", path=str(original), lower_values=False), Path(tmp)).frame
        expected = [[tuple(str(v).lower() if isinstance(v, str) else v for v in r) for r in rows or []]
                    for rows in gold_rows(reference, executor)]
        print(f"{'lower_values':<13} {'questions':>9} {'gold_empty':>10} {'gold = original rows':>21} "
              f"{'load s':>7} {'rows/s':>7}  chosen")
        for label, value in (("detected", None), ("false", False), ("true", True)):
            started = time.perf_counter()
            loaded = load_dataset(DatasetConfig(kind="wikisql", path=str(official), lower_values=value), Path(tmp))
            elapsed = time.perf_counter() - started
            frame = loaded.frame
            same = sum(sorted(map(repr, got or [])) == sorted(map(repr, want))
                       for got, want in zip(gold_rows(frame, executor), expected, strict=True))
            print(f"{label:<13} {frame.height:>9} {loaded.facts['gold_empty_result']:>10} {same:>21} "
                  f"{elapsed:>7.2f} {frame.height / elapsed:>7.0f}  {loaded.facts['lower_values']}")
        executor.close()
        config = RunConfig(dataset=DatasetConfig(kind="wikisql", path=str(official)))
        frozen: FrozenRun = freeze("bench", config, GatesConfig())
        started = time.perf_counter()
        check_dataset(frozen, Path(tmp))
        print(f"preflight (first 20 questions of each of 3 splits loaded): {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
