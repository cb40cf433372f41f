"""Choose and run the loader a run's dataset config names."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fastdistill_assets.config import DatasetConfig, ExecutionGates
from fastdistill_assets.datasets import questions, records, spider, wikisql
from fastdistill_assets.datasets.demo import ensure_demo_dataset
from fastdistill_assets.hashing import sha256_text


def load_dataset(config: DatasetConfig, data_dir: Path, limits: ExecutionGates | None = None) -> pl.DataFrame:
    """Raw records for every configured split (good rows and reject records). ``limits``: the
    run's execution gates, which a user's gold SQL must pass (questions kind).

    Raises:
        ValueError: wikisql/spider/questions without a ``path``.
    """
    if config.kind == "questions":
        return withhold_gold(records.to_frame(questions.load(config, limits)), config)
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
    return withhold_gold(records.to_frame(rows), config)


def is_withheld(source_id: str, share: float) -> bool:
    """A stable choice of ``share`` of the questions, by a hash of their source_id."""
    return int(sha256_text(source_id)[:8], 16) < share * 0x1_0000_0000


def withhold_gold(raw: pl.DataFrame, config: DatasetConfig) -> pl.DataFrame:
    """Move the gold of the chosen questions to ``withheld_gold_sql`` (see ``WithholdGold``)."""
    withhold = config.withhold_gold
    if withhold.share <= 0 or raw.height == 0:
        return raw
    chosen = pl.Series([is_withheld(s, withhold.share) for s in raw["source_id"]], dtype=pl.Boolean)
    chosen = chosen & raw["split"].is_in(withhold.splits) & raw["gold_sql"].is_not_null()
    return raw.with_columns(
        pl.when(chosen).then(pl.col("gold_sql")).otherwise(pl.col("withheld_gold_sql")).alias("withheld_gold_sql"),
        pl.when(chosen).then(None).otherwise(pl.col("gold_sql")).alias("gold_sql"))


def eval_split_has_gold(config: DatasetConfig, eval_split: str) -> bool:
    """Whether the run's eval split can have gold SQL (checked before anything runs)."""
    if eval_split not in config.splits:
        return False
    if eval_split in config.withhold_gold.splits and config.withhold_gold.share >= 1.0:
        return False
    if config.kind == "questions":
        return questions.eval_split_has_gold(config, eval_split)
    return True  # the benchmark formats require gold on every question
