"""Data plane assets: raw and canonical, sharded stages (see ``assets.sharding``).

Both stream: each is produced chunk by chunk into a resumable spool of parquet parts (see
``chunks``) and returned as a ``ChunkedFrame``, so a stage of a million questions never sits in
memory whole and a killed step re-run keeps the parts it finished. With ``scale.shards`` K the
chunks are spread over K Dagster steps. Each part's counts are kept in its summary; the stage's
metadata adds them up.
"""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.core.processes import step_workers
from fastdistill_assets.datasets.canonical import (
    CANONICAL_SCHEMA,
    canonicalize,
    keep_first_across_parts,
)
from fastdistill_assets.datasets.load import (
    RAW_COUNTS,
    Batch,
    DatasetStream,
    dataset_identity,
    empty_dataset_message,
    raw_summary,
)
from fastdistill_assets.datasets.records import RAW_SCHEMA
from fastdistill_assets.defs.assets.sharding import (
    ShardedStage,
    StageStep,
    sharded_asset,
    stage_metadata,
)
from fastdistill_assets.defs.partitions import run_partitions
from fastdistill_assets.defs.resources import step_errors
from fastdistill_assets.store.chunks import (
    ChunkedFrame,
    ChunkSpool,
    ChunkWork,
    add_summaries,
)
from fastdistill_assets.store.storage import StageScan


def _stream(step: StageStep) -> DatasetStream:
    frozen, scale = step.frozen, step.frozen.config.scale
    return DatasetStream(frozen.config.dataset, step.run_config.data_dir(), frozen.gates.execution,
                         scale.chunk_rows, step_workers(scale.workers, scale.shards))


def _batches(step: StageStep, source: StageScan | None,
             wanted: Callable[[int], bool]) -> Iterator[tuple[Batch, dict[str, Any]]]:
    """The dataset's batches, each with the stream's facts so far; one the step does not want is
    counted, not loaded."""
    stream = _stream(step)
    with step_errors(OSError, ValueError, sqlite3.Error):
        for batch in stream.batches(skip=lambda index: not wanted(index)):
            yield batch, dict(stream.facts)


def _raw_depends_on(step: StageStep, source: StageScan | None) -> dict[str, Any]:
    """The frozen dataset config, the execution gates gold must pass, the chunk size and the
    identity (path, size, mtime) of the dataset's files, databases included."""
    frozen = step.frozen
    with step_errors(OSError, ValueError):
        files = dataset_identity(frozen.config.dataset, step.run_config.data_dir())
    return {"dataset": frozen.config.dataset.model_dump(mode="json"),
            "execution": frozen.gates.execution.model_dump(mode="json"),
            "rows": frozen.config.scale.chunk_rows, "files": files}


@contextmanager
def _load(step: StageStep) -> Iterator[ChunkWork]:
    def work(index: int, loaded: tuple[Batch, dict]) -> tuple[pl.DataFrame, dict]:
        batch, facts = loaded
        if batch.frame is None:  # it was done when read; another run of the run_id published it since
            raise dg.Failure(f"raw: part {index} was published by another materialization of this run_id "
                             "while this step ran; materialize again")
        return batch.frame, raw_summary(batch, facts)
    yield work


def _publish_raw(step: StageStep, spool: ChunkSpool, count: int) -> ChunkedFrame:
    summaries = [spool.summary(i) for i in range(count)]
    total = add_summaries(summaries, RAW_COUNTS, ("reject_reason_counts", "split_counts"))
    reject_counts = dict(sorted(total["reject_reason_counts"].items()))
    if total["rejected"] == total["rows"]:
        raise dg.Failure(description=empty_dataset_message(reject_counts),
                         metadata={"rows": total["rows"], "reject_reason_counts": dg.MetadataValue.json(reject_counts)})
    lower_values = {split: fact for s in summaries for split, fact in s["facts"].get("lower_values", {}).items()}
    step.context.add_output_metadata({
        **stage_metadata(step, spool, count, total["rows"]),
        "rejected": total["rejected"],
        "reject_reason_counts": dg.MetadataValue.json(reject_counts),
        "split_counts": dg.MetadataValue.json(total["split_counts"]),
        "labeled": total["labeled"],
        "gold_free": total["gold_free"],
        "dataset": step.frozen.config.dataset.kind,
        "gold_empty_result": total["gold_empty_result"],
        **({"lower_values": dg.MetadataValue.json(lower_values)} if lower_values else {}),
    })
    return ChunkedFrame(spool.parts(count), schema=dict(RAW_SCHEMA), spool=spool)


RAW_STAGE = ShardedStage(name="raw", chunks=_batches, depends_on=_raw_depends_on, work=_load, finish=_publish_raw)

raw = sharded_asset(RAW_STAGE, None, pool=None, partitions_def=run_partitions, tags={"plane": "data"},
                    kinds={"polars"}, description="""
Questions loaded from the run's dataset, every split, bad rows kept as reject records.

Writes: source_id, split, db_id, question, evidence, gold_sql (null: no gold), withheld_gold_sql,
db_path, dialect, schema, sample_rows, difficulty, gold_empty, reject_reason, reject_detail,
raw_record. Fails when no question is usable ("dataset has 0 usable questions", with the
reject counts). Metadata counts gold queries with an empty result (`gold_empty_result`) and
says how WikiSQL text case was chosen (`lower_values`).

Streams: the dataset is read in batches of `scale.chunk_rows` questions, each loaded (gold
validated in `scale.workers` processes when a batch is large) and written as a part of a spool
under `_work/raw`; with `scale.shards` K, shard k loads the batches whose index is k mod K
(every shard reads the questions, only its own are loaded). A re-run after a kill loads only
the parts not yet written.
""".strip())


@contextmanager
def _canonicalize(step: StageStep) -> Iterator[ChunkWork]:
    config = step.frozen.config

    def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        result = canonicalize(chunk, config)  # duplicates within the chunk; across chunks at publish
        good = chunk.height - sum(result.raw_rejected.values())
        return result.frame, {"good": good, "raw_rejected": result.raw_rejected}
    yield work


def _publish_canonical(step: StageStep, spool: ChunkSpool, count: int) -> ChunkedFrame:
    rows = keep_first_across_parts(spool, count)
    total = add_summaries([spool.summary(i) for i in range(count)], ("good",), ("raw_rejected",))
    step.context.add_output_metadata({
        **stage_metadata(step, spool, count, total["good"] + sum(total["raw_rejected"].values())),
        "duplicates_dropped": total["good"] - sum(rows),
        "raw_rejected": sum(total["raw_rejected"].values()),
        "raw_reject_reason_counts": dg.MetadataValue.json(total["raw_rejected"]),
    })
    parts = [part for part, kept in zip(spool.parts(count), rows, strict=True) if kept]
    return ChunkedFrame(parts, schema=dict(CANONICAL_SCHEMA), spool=spool)


CANONICAL_STAGE = ShardedStage(
    name="canonical",
    chunks=lambda step, raw, wanted: raw.row_groups(wanted=wanted),  # type: ignore[union-attr]  # raw arrives as a StageScan
    depends_on=lambda step, raw: {"config": step.frozen.config_hash,
                                  "raw": [raw.manifest.get("version"), raw.manifest.get("content_hash")] if raw
                                  else None},
    work=_canonicalize,
    finish=_publish_canonical,
)

canonical = sharded_asset(CANONICAL_STAGE, "raw", pool=None, partitions_def=run_partitions, tags={"plane": "data"},
                          kinds={"polars"}, description="""
Good raw rows under the data contract, exact duplicates (same sample_id) dropped.

Reads: raw (all columns). Writes: sample_id, task_id, split, source_id, db_id, question, evidence,
canonical_input, schema, schema_hash, decode_profile, gold_sql, withheld_gold_sql, db_path, dialect,
sample_rows, difficulty.

Streams: raw is read a row group at a time, each canonicalized (duplicates within it dropped)
and written as a part of a spool under `_work/canonical`; with `scale.shards` K, shard k does
the row groups whose index is k mod K. The merge then keeps the first row of each sample_id in
the whole stage (one pass over the parts' ids, 16-byte digests), as one pass in order would.
A re-run after a kill canonicalizes only the parts not yet written.
""".strip())
