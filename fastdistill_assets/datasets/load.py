"""Choose and run the loader a run's dataset config names, whole or as a stream of batches."""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from fastdistill_assets.config.models import DatasetConfig, ExecutionGates
from fastdistill_assets.core.hashing import sha256_text
from fastdistill_assets.core.processes import WorkerPool
from fastdistill_assets.datasets import questions, records, spider, wikisql
from fastdistill_assets.datasets.demo import ensure_demo_dataset


@dataclass(frozen=True)
class Loaded:
    """Raw records of every configured split, and what loading found out (for raw's metadata)."""

    frame: pl.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Consecutive raw records of the dataset: the ``index``-th batch (of at most ``chunk_rows``;
    a batch never spans two splits of a WikiSQL or Spider dataset). ``frame``: the records with
    ``reject_empty_gold`` and ``withhold_gold`` applied, or None for a batch the caller skipped
    (not loaded). ``gold_empty``: its gold queries with an empty result (before any reject)."""

    index: int
    frame: pl.DataFrame | None
    gold_empty: int = 0


class DatasetStream:
    """The dataset as batches of at most ``chunk_rows`` questions, in the order and with the
    records :func:`load_dataset` gives. A WikiSQL (and demo) split is read line by line, its
    tables once, and each batch's gold validated at once, in ``workers`` processes (None:
    the CPUs the process may use) when the batch is large; a Spider/BIRD questions file (a JSON list) and a
    CSV or parquet questions file are read whole and validated a batch at a time.

    ``facts`` (filled while iterating): ``lower_values`` per WikiSQL split.
    """

    def __init__(self, config: DatasetConfig, data_dir: Path, limits: ExecutionGates | None = None,
                 chunk_rows: int = 10_000, workers: int | None = None) -> None:
        self.config, self.data_dir, self.limits = config, data_dir, limits
        self.chunk_rows, self.workers = chunk_rows, workers
        self.facts: dict[str, Any] = {}

    def batches(self, skip: Callable[[int], bool] = lambda index: False) -> Iterator[Batch]:
        """Every batch in order; a batch whose index ``skip`` accepts is counted (its questions
        are read) but not loaded: its ``frame`` is None.

        Raises:
            ValueError: wikisql/spider/questions without a ``path``; a questions file that cannot be read.
            FileNotFoundError: a file the dataset needs is missing.
        """
        index = 0
        with WorkerPool(self.workers) as pool:
            for load, items in self._sources(pool):
                while batch := list(itertools.islice(items, self.chunk_rows)):
                    yield Batch(index, None) if skip(index) else self._batch(index, load(batch))
                    index += 1

    def _batch(self, index: int, rows: list[dict[str, Any]]) -> Batch:
        frame = reject_too_long(records.to_frame(rows), self.config.max_question_chars)
        gold_empty = int(frame.filter(pl.col("reject_reason").is_null())["gold_empty"].fill_null(False).sum())
        if self.config.gold_empty_result == "reject":
            frame = reject_empty_gold(frame)
        return Batch(index, withhold_gold(frame, self.config), gold_empty)

    def _sources(self, pool: WorkerPool) -> Iterator[tuple[Callable[[list[Any]], list[dict[str, Any]]], Iterator[Any]]]:
        """(load a batch, the questions) per split, each open while its questions are consumed."""
        config = self.config
        if config.kind == "questions":
            with questions.QuestionsSource(config, self.limits) as source:
                yield source.load, source.questions()
            return
        folder = dataset_folder(config, self.data_dir)
        for split in config.splits:
            if config.kind == "spider":
                with spider.SplitSource(folder, split, sample_rows=config.sample_rows,
                                        sample_rows_total=config.sample_rows_total, limits=self.limits) as source:
                    yield source.load, source.questions(config.limit_per_split)
                continue
            with wikisql.SplitReader(folder, split, lower_values=config.lower_values,
                                     sample_rows=config.sample_rows) as reader:
                self.facts.setdefault("lower_values", {})[split] = reader.lower_values_fact
                yield (lambda batch, reader=reader: reader.load(batch, pool.executor(len(batch)), pool.workers),
                       reader.questions(config.limit_per_split))


def load_dataset(config: DatasetConfig, data_dir: Path, limits: ExecutionGates | None = None) -> Loaded:
    """Raw records for every configured split (good rows and reject records). ``limits``: the
    run's execution gates, which gold SQL must pass. Facts: ``lower_values`` per WikiSQL split
    (and whether it was detected) and ``gold_empty_result``, the gold queries that returned no
    rows or only NULLs (kept, or rejected with that reason per ``dataset.gold_empty_result``).
    The whole dataset in memory, loaded in-process: the ``raw`` asset streams
    :class:`DatasetStream` instead.

    Raises:
        ValueError: wikisql/spider/questions without a ``path``.
        FileNotFoundError: a file the dataset needs is missing.
    """
    stream = DatasetStream(config, data_dir, limits, chunk_rows=sys.maxsize, workers=1)
    batches = list(stream.batches())
    frames = [b.frame for b in batches if b.frame is not None]
    frame = pl.concat(frames) if frames else records.to_frame([])
    return Loaded(frame, {**stream.facts, "gold_empty_result": sum(b.gold_empty for b in batches)})


RAW_COUNTS = ("rows", "rejected", "labeled", "gold_free", "gold_empty_result")  # raw's counts, added over parts


def raw_summary(batch: Batch, facts: dict[str, Any]) -> dict[str, Any]:
    """What raw reports of one loaded batch (a part's summary): RAW_COUNTS, reject reasons,
    splits and the stream's ``facts`` so far (``lower_values`` per WikiSQL split)."""
    frame = batch.frame
    assert frame is not None
    good = pl.col("reject_reason").is_null()
    rejected = frame.filter(~good)
    return {
        "rows": frame.height,
        "rejected": rejected.height,
        "reject_reason_counts": dict(rejected.group_by("reject_reason").len().iter_rows()),
        "split_counts": dict(frame.group_by("split", maintain_order=True).len().iter_rows()),
        "labeled": frame.filter(good & pl.col("gold_sql").is_not_null()).height,
        "gold_free": frame.filter(good & pl.col("gold_sql").is_null()).height,
        "gold_empty_result": batch.gold_empty,
        "facts": facts,
    }


def dataset_identity(config: DatasetConfig, data_dir: Path) -> list[list[Any]]:
    """(path, size, mtime) of every file :func:`dataset_files` names: what raw's parts depend on
    beyond the config.

    Raises:
        ValueError: wikisql/spider/questions without a ``path``.
    """
    identity = []
    for path in dataset_files(config, data_dir):
        stat = path.stat()
        identity.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return identity


def dataset_files(config: DatasetConfig, data_dir: Path) -> list[Path]:
    """The files a dataset is read from that exist (questions, tables, and the databases of a
    WikiSQL or Spider/BIRD folder; not the databases a questions file names per row): what
    identifies its content.

    Raises:
        ValueError: wikisql/spider/questions without a ``path``.
    """
    if config.kind == "questions":
        found = [questions.questions_path(config), *([Path(config.db_path)] if config.db_path else [])]
    else:
        folder = dataset_folder(config, data_dir)
        found = []
        for split in config.splits:
            if config.kind == "spider":
                with contextlib.suppress(FileNotFoundError):
                    found.append(spider.questions_file(folder, split))
                found += spider.database_files(folder, split)
            else:
                found += [folder / f"{split}.jsonl", folder / f"{split}.tables.jsonl", folder / f"{split}.db"]
    return [path for path in found if path.is_file()]


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


def _reject_where(raw: pl.DataFrame, condition: pl.Expr, reason: str, detail: pl.Expr) -> pl.DataFrame:
    """Good rows meeting ``condition`` become ``reason`` rejects, the record kept whole in ``raw_record``."""
    chosen = pl.col("reject_reason").is_null() & condition
    return raw.with_columns(
        pl.when(chosen).then(pl.lit(reason)).otherwise(pl.col("reject_reason")).alias("reject_reason"),
        pl.when(chosen).then(detail).otherwise(pl.col("reject_detail")).alias("reject_detail"),
        pl.when(chosen).then(pl.struct(pl.all().exclude("raw_record")).struct.json_encode())
        .otherwise(pl.col("raw_record")).alias("raw_record"),
    )


def reject_empty_gold(raw: pl.DataFrame) -> pl.DataFrame:
    """Good rows whose gold query returned no rows or only NULLs become ``gold_empty_result`` rejects."""
    return _reject_where(raw, pl.col("gold_empty").fill_null(False), "gold_empty_result",
                         pl.lit("the gold query returns no rows or only NULLs (dataset.gold_empty_result: reject)"))


def reject_too_long(raw: pl.DataFrame, max_chars: int) -> pl.DataFrame:
    """Good rows whose question is longer than ``max_chars`` become ``too_long`` rejects: never
    sent to the teacher."""
    length = pl.col("question").str.len_chars()
    return _reject_where(raw, length > max_chars, "too_long",
                         pl.format("the question has {} characters; dataset.max_question_chars is {}",
                                   length, pl.lit(max_chars)))


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
