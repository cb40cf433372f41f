"""The timing report: every stage's recorded timings, read back from the Dagster instance."""

from __future__ import annotations

from typing import Any

import dagster as dg

STAGES = ("raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model")
DATA_STAGES = ("raw", "canonical", "teacher_candidates", "filtered", "distilled")


def stage_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, Any]]:
    """Latest materialization metadata of each stage for this run_id (plain values)."""
    out: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[run_id]), limit=1).records
        if records and records[0].asset_materialization:
            out[stage] = {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}
    return out


def timing_report(meta: dict[str, dict[str, Any]], eval_wall_s: float) -> dict[str, Any]:
    """Per-stage wall time and row p50/p90/p95, throughput figures, and the pipeline's kept rate."""
    stages = {}
    for stage, values in meta.items():
        stages[stage] = {k.removeprefix("timing_"): values[k] for k in values if k.startswith("timing_")}
    stages["eval_report"] = {"wall_s": round(eval_wall_s, 4)}
    data_wall = sum(meta.get(s, {}).get("timing_wall_s", 0.0) for s in DATA_STAGES)
    kept = meta.get("distilled", {}).get("kept", 0)
    return {
        "stages": stages,
        "pipeline_wall_s": round(data_wall + meta.get("student_model", {}).get("timing_wall_s", 0.0) + eval_wall_s, 3),
        "pipeline_kept_samples_per_hour": round(kept / data_wall * 3600, 1) if data_wall else 0.0,
        "teacher_tokens_per_sec": meta.get("teacher_candidates", {}).get("teacher_tokens_per_sec", 0.0),
        "train_tokens_per_sec": meta.get("student_model", {}).get("train_tokens_per_sec", 0.0),
    }
