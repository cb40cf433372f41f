"""Data plane assets: raw and canonical."""

import sqlite3

import dagster as dg
import polars as pl

from fastdistill_assets.canonical import canonicalize
from fastdistill_assets.datasets.load import empty_dataset_message, load_dataset
from fastdistill_assets.partitions import run_partitions
from fastdistill_assets.resources import RunConfigResource, step_errors
from fastdistill_assets.timing import StageTimer


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "data"}, kinds={"polars"})
def raw(context: dg.AssetExecutionContext, run_config: RunConfigResource) -> pl.DataFrame:
    """Questions loaded from the run's dataset, every split, bad rows kept as reject records.

    Writes: source_id, split, db_id, question, evidence, gold_sql (null: no gold), withheld_gold_sql,
    db_path, dialect, schema, sample_rows, difficulty, gold_empty, reject_reason, reject_detail,
    raw_record. Fails when no question is usable ("dataset has 0 usable questions", with the
    reject counts). Metadata counts gold queries with an empty result (`gold_empty_result`) and
    says how WikiSQL text case was chosen (`lower_values`).
    """
    timer = StageTimer()
    frozen = run_config.for_partition(context)
    with step_errors(OSError, ValueError, sqlite3.Error):
        loaded = load_dataset(frozen.config.dataset, run_config.data_dir(), frozen.gates.execution)
    frame = loaded.frame
    rejected = frame.filter(pl.col("reject_reason").is_not_null())
    reject_counts = dict(rejected.group_by("reject_reason").len().sort("reject_reason").iter_rows())
    if rejected.height == frame.height:
        raise dg.Failure(description=empty_dataset_message(reject_counts),
                         metadata={"rows": frame.height, "reject_reason_counts": dg.MetadataValue.json(reject_counts)})
    context.add_output_metadata({
        **timer.metadata(rows=frame.height),
        "rejected": rejected.height,
        "reject_reason_counts": dg.MetadataValue.json(reject_counts),
        "split_counts": dg.MetadataValue.json(dict(frame.group_by("split").len().iter_rows())),
        "labeled": frame.filter(pl.col("reject_reason").is_null() & pl.col("gold_sql").is_not_null()).height,
        "gold_free": frame.filter(pl.col("reject_reason").is_null() & pl.col("gold_sql").is_null()).height,
        "dataset": frozen.config.dataset.kind,
        "gold_empty_result": loaded.facts["gold_empty_result"],
        **({"lower_values": dg.MetadataValue.json(loaded.facts["lower_values"])} if "lower_values" in loaded.facts
           else {}),
    })
    return frame


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "data"}, kinds={"polars"})
def canonical(context: dg.AssetExecutionContext, run_config: RunConfigResource, raw: pl.DataFrame) -> pl.DataFrame:
    """Good raw rows under the data contract, exact duplicates (same sample_id) dropped.

    Reads: raw (all columns). Writes: sample_id, task_id, split, source_id, db_id, question, evidence,
    canonical_input, schema, schema_hash, decode_profile, gold_sql, withheld_gold_sql, db_path, dialect,
    sample_rows, difficulty.
    """
    timer = StageTimer()
    frozen = run_config.for_partition(context)
    result = canonicalize(raw, frozen.config)
    context.add_output_metadata({
        **timer.metadata(rows=raw.height),
        "duplicates_dropped": result.duplicates_dropped,
        "raw_rejected": sum(result.raw_rejected.values()),
        "raw_reject_reason_counts": dg.MetadataValue.json(result.raw_rejected),
    })
    return result.frame
