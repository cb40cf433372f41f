"""Data plane assets: raw and canonical.

Both stream: each is produced chunk by chunk into a resumable spool of parquet parts (see
``chunks``) and returned as a ``ChunkedFrame``, so a stage of a million questions never sits in
memory whole and a killed step re-run keeps the parts it finished. Each part's counts are kept
in its summary; the stage's metadata adds them up.
"""

import contextlib
import sqlite3
from collections import Counter
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.canonical import CANONICAL_SCHEMA, canonicalize, id_digest
from fastdistill_assets.chunks import ChunkedFrame, ChunkSpool
from fastdistill_assets.config import FrozenRun
from fastdistill_assets.datasets.load import Batch, DatasetStream, dataset_files, empty_dataset_message
from fastdistill_assets.datasets.records import RAW_SCHEMA
from fastdistill_assets.hashing import sha256_json
from fastdistill_assets.partitions import run_partitions
from fastdistill_assets.resources import RunConfigResource, step_errors
from fastdistill_assets.storage import StageScan
from fastdistill_assets.timing import StageTimer

RAW_COUNTS = ("rows", "rejected", "labeled", "gold_free", "gold_empty_result")


def raw_summary(batch: Batch) -> dict[str, Any]:
    """The counts raw reports, of one batch (a part's summary)."""
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
    }


def add_summaries(summaries: list[dict[str, Any]], counts: tuple[str, ...],
                  tallies: tuple[str, ...]) -> dict[str, Any]:
    """Parts' summaries added up: ``counts`` are numbers, ``tallies`` are {key: number} (in
    first-seen key order)."""
    total: dict[str, Any] = {name: 0 for name in counts} | {name: Counter() for name in tallies}
    for summary in summaries:
        for name in counts:
            total[name] += summary[name]
        for name in tallies:
            total[name].update(summary[name])
    return total | {name: dict(total[name]) for name in tallies}


def raw_fingerprint(frozen: FrozenRun, chunk_rows: int, files: list[Any]) -> str:
    """What raw's parts depend on: the frozen dataset config, the execution gates gold must
    pass, the chunk size and the identity (path, size, mtime) of the dataset's files."""
    identity = []
    for path in files:
        stat = path.stat()
        identity.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return sha256_json({"dataset": frozen.config.dataset.model_dump(mode="json"),
                        "execution": frozen.gates.execution.model_dump(mode="json"),
                        "chunk_rows": chunk_rows, "files": identity})


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "data"}, kinds={"polars"})
def raw(context: dg.AssetExecutionContext, run_config: RunConfigResource) -> ChunkedFrame:
    """Questions loaded from the run's dataset, every split, bad rows kept as reject records.

    Writes: source_id, split, db_id, question, evidence, gold_sql (null: no gold), withheld_gold_sql,
    db_path, dialect, schema, sample_rows, difficulty, gold_empty, reject_reason, reject_detail,
    raw_record. Fails when no question is usable ("dataset has 0 usable questions", with the
    reject counts). Metadata counts gold queries with an empty result (`gold_empty_result`) and
    says how WikiSQL text case was chosen (`lower_values`).

    Streams: the dataset is loaded in batches of `scale.chunk_rows` questions (gold validated a
    batch at a time, in `scale.workers` processes when a batch is large), each written as a part
    of a spool under `_work/raw`; a re-run after a kill loads only the parts not yet written.
    """
    timer = StageTimer()
    frozen = run_config.for_partition(context)
    dataset, scale = frozen.config.dataset, frozen.config.scale
    with step_errors(OSError, ValueError, sqlite3.Error):
        fingerprint = raw_fingerprint(frozen, scale.chunk_rows, dataset_files(dataset, run_config.data_dir()))
        spool = ChunkSpool(run_config.work_dir(context, "raw"), fingerprint)
        stream = DatasetStream(dataset, run_config.data_dir(), frozen.gates.execution, scale.chunk_rows,
                               scale.workers)
        count = resumed = 0
        with contextlib.closing(stream.batches(skip=spool.done)) as batches:
            for batch in batches:
                if batch.frame is None:
                    resumed += 1
                else:
                    spool.write(batch.index, batch.frame, raw_summary(batch))
                count += 1
    if resumed:
        context.log.info(f"raw: {resumed} of {count} parts were already written by an earlier attempt")
    total = add_summaries([spool.summary(i) for i in range(count)], RAW_COUNTS,
                          ("reject_reason_counts", "split_counts"))
    reject_counts = dict(sorted(total["reject_reason_counts"].items()))
    if total["rejected"] == total["rows"]:
        raise dg.Failure(description=empty_dataset_message(reject_counts),
                         metadata={"rows": total["rows"], "reject_reason_counts": dg.MetadataValue.json(reject_counts)})
    context.add_output_metadata({
        **timer.metadata(rows=total["rows"]),
        "rejected": total["rejected"],
        "reject_reason_counts": dg.MetadataValue.json(reject_counts),
        "split_counts": dg.MetadataValue.json(total["split_counts"]),
        "labeled": total["labeled"],
        "gold_free": total["gold_free"],
        "dataset": dataset.kind,
        "gold_empty_result": total["gold_empty_result"],
        **({"lower_values": dg.MetadataValue.json(stream.facts["lower_values"])} if "lower_values" in stream.facts
           else {}),
        "parts_resumed": resumed,
    })
    return ChunkedFrame(spool.parts(count), schema=dict(RAW_SCHEMA), spool=spool)


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "data"}, kinds={"polars"})
def canonical(context: dg.AssetExecutionContext, run_config: RunConfigResource, raw: StageScan) -> ChunkedFrame:
    """Good raw rows under the data contract, exact duplicates (same sample_id) dropped.

    Reads: raw (all columns). Writes: sample_id, task_id, split, source_id, db_id, question, evidence,
    canonical_input, schema, schema_hash, decode_profile, gold_sql, withheld_gold_sql, db_path, dialect,
    sample_rows, difficulty.

    Streams: raw is read a row group at a time, each written as a part of a spool under
    `_work/canonical`; the first row of each sample_id in the whole stage is kept (a set of
    16-byte digests of the ids kept so far). A re-run after a kill reads back the ids of the
    parts already written and canonicalizes only the rest.
    """
    timer = StageTimer()
    frozen = run_config.for_partition(context)
    fingerprint = sha256_json({"config": frozen.config.model_dump(mode="json"),
                               "raw": [raw.manifest.get("version"), raw.manifest.get("content_hash")]})
    spool = ChunkSpool(run_config.work_dir(context, "canonical"), fingerprint)
    seen: set[bytes] = set()
    count = resumed = 0
    for index, chunk in enumerate(raw.row_groups()):
        if spool.done(index):  # written by a killed attempt: its ids are seen, its rows kept
            seen.update(id_digest(s) for s in pl.read_parquet(spool.part(index), columns=["sample_id"])["sample_id"])
            resumed += 1
        else:
            result = canonicalize(chunk, frozen.config, seen)
            spool.write(index, result.frame, {"rows": result.frame.height,
                                              "duplicates_dropped": result.duplicates_dropped,
                                              "raw_rejected": result.raw_rejected})
        count = index + 1
    summaries = [spool.summary(i) for i in range(count)]
    total = add_summaries(summaries, ("duplicates_dropped",), ("raw_rejected",))
    if resumed:
        context.log.info(f"canonical: {resumed} of {count} parts were already written by an earlier attempt")
    context.add_output_metadata({
        **timer.metadata(rows=raw.count),
        "duplicates_dropped": total["duplicates_dropped"],
        "raw_rejected": sum(total["raw_rejected"].values()),
        "raw_reject_reason_counts": dg.MetadataValue.json(total["raw_rejected"]),
        "parts_resumed": resumed,
    })
    parts = [part for part, summary in zip(spool.parts(count), summaries, strict=True) if summary["rows"]]
    return ChunkedFrame(parts, schema=dict(CANONICAL_SCHEMA), spool=spool)
