"""Choose and run the loader a run's dataset config names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from fastdistill_assets.config import DatasetConfig, ExecutionGates
from fastdistill_assets.datasets import questions, records, spider, wikisql
from fastdistill_assets.datasets.demo import ensure_demo_dataset
from fastdistill_assets.hashing import sha256_text


@dataclass(frozen=True)
class Loaded:
    """Raw records of every configured split, and what loading found out (for raw's metadata)."""

    frame: pl.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)


def load_dataset(config: DatasetConfig, data_dir: Path, limits: ExecutionGates | None = None) -> Loaded:
    """Raw records for every configured split (good rows and reject records). ``limits``: the
    run's execution gates, which gold SQL must pass. Facts: ``lower_values`` per WikiSQL split
    (and whether it was detected) and ``gold_empty_result``, the gold queries that returned no
    rows or only NULLs (kept, or rejected with that reason per ``dataset.gold_empty_result``).

    Raises:
        ValueError: wikisql/spider/questions without a ``path``.
        FileNotFoundError: a file the dataset needs is missing.
    """
    facts: dict[str, Any] = {}
    if config.kind == "questions":
        rows = questions.load(config, limits)
    else:
        folder = dataset_folder(config, data_dir)
        rows = []
        for split in config.splits:
            if config.kind == "spider":
                rows += spider.load_split(folder, split, sample_rows=config.sample_rows,
                                          sample_rows_total=config.sample_rows_total, limit=config.limit_per_split,
                                          limits=limits)
                continue
            split_facts: dict[str, Any] = {}
            rows += wikisql.load_split(folder, split, lower_values=config.lower_values, sample_rows=config.sample_rows,
                                       limit=config.limit_per_split, facts=split_facts)
            facts.setdefault("lower_values", {})[split] = split_facts["lower_values"]
    frame = records.to_frame(rows)
    facts["gold_empty_result"] = int(frame["gold_empty"].fill_null(False).sum())
    if config.gold_empty_result == "reject":
        frame = reject_empty_gold(frame)
    return Loaded(withhold_gold(frame, config), facts)


def dataset_folder(config: DatasetConfig, data_dir: Path) -> Path:
    """The folder of a demo, wikisql or spider dataset (the demo's is generated on first use).

    Raises:
        ValueError: wikisql/spider without ``dataset.path``.
    """
    if config.kind == "demo":
        return ensure_demo_dataset(data_dir / "demo")
    if config.path is None:
        raise ValueError(f"dataset kind {config.kind!r} needs dataset.path in the run config")
    return Path(config.path)


def reject_empty_gold(raw: pl.DataFrame) -> pl.DataFrame:
    """Good rows whose gold query returned no rows or only NULLs become ``gold_empty_result`` rejects."""
    empty = pl.col("reject_reason").is_null() & pl.col("gold_empty").fill_null(False)
    return raw.with_columns(
        pl.when(empty).then(pl.lit("gold_empty_result")).otherwise(pl.col("reject_reason")).alias("reject_reason"),
        pl.when(empty).then(pl.lit("the gold query returns no rows or only NULLs (dataset.gold_empty_result: reject)"))
        .otherwise(pl.col("reject_detail")).alias("reject_detail"),
        pl.when(empty).then(pl.struct(pl.all().exclude("raw_record")).struct.json_encode())
        .otherwise(pl.col("raw_record")).alias("raw_record"),
    )


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


def empty_dataset_message(reject_counts: dict[str, int]) -> str:
    """Why ``raw`` fails when no question is usable."""
    reasons = ", ".join(f"{reason}: {n}" for reason, n in reject_counts.items()) or "the dataset has no rows"
    return f"dataset has 0 usable questions ({reasons})"
