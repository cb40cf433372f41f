"""Choose and run the loader a run's dataset config names."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fastdistill_assets.config import DatasetConfig
from fastdistill_assets.datasets import records, spider, wikisql
from fastdistill_assets.datasets.demo import ensure_demo_dataset


def load_dataset(config: DatasetConfig, data_dir: Path) -> pl.DataFrame:
    """Raw records for every configured split (good rows and reject records).

    Raises:
        ValueError: wikisql/spider without a ``path``.
    """
    if config.kind == "demo":
        folder = ensure_demo_dataset(data_dir / "demo")
    elif config.path is None:
        raise ValueError(f"dataset kind {config.kind!r} needs dataset.path in the run config")
    else:
        folder = Path(config.path)
    rows = []
    for split in config.splits:
        if config.kind == "spider":
            rows += spider.load_split(folder, split, sample_rows=config.sample_rows, limit=config.limit_per_split)
        else:
            rows += wikisql.load_split(folder, split, lower_values=config.lower_values,
                                       sample_rows=config.sample_rows, limit=config.limit_per_split)
    return records.to_frame(rows)
