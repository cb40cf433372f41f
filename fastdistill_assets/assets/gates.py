"""Gate assets: filtered (every verdict) and distilled (kept samples and exports)."""

import json

import dagster as dg
import polars as pl

from fastdistill_assets.gates import sft_export
from fastdistill_assets.gates.consistency import apply_consistency
from fastdistill_assets.gates.judge import run_judge
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.gates.select import attach_judge, select
from fastdistill_assets.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.gates.quality_report import markdown_table, quality_report
from fastdistill_assets.resources import RunConfigResource, step_errors
from fastdistill_assets.storage import StageOutput
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.timing import StageTimer

PARALLEL_ROWS = 20_000


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "gates"}, kinds={"sqlglot", "sqlite"},
          pool=TEACHER_POOL)
def filtered(context: dg.AssetExecutionContext, run_config: RunConfigResource, teacher: ProviderGateway,
             teacher_candidates: pl.DataFrame) -> StageOutput:
    """Every candidate with each gate's verdict and reason; nothing is dropped.

    Samples with gold pass the gold match; samples without gold (gold_sql null) pass
    self-consistency across their candidates instead.

    Reads teacher_candidates: candidate_id, sample_id, raw_output, error, db_path, dialect,
    gold_sql, question, schema, messages. Adds: rationale, cleaned_sql, clean_actions, rule_ok,
    rule_reason, parse_ok, parse_error, exec_ok, exec_error, exec_error_detail, exec_ms,
    result_rows, result_signature, result_preview, gold_signature, gold_match, agreement,
    judge_score, judge_source, judge_error, reject_reason, kept, gate_ms. Side file:
    quality_report.json (overall and per path: labeled, gold_free).
    """
    timer = StageTimer()
    frozen = run_config.for_partition(context)
    gates, recipe = frozen.gates, frozen.config.recipe
    workers = 2 if teacher_candidates.height >= PARALLEL_ROWS else 1
    gated = apply_consistency(gate_frame(teacher_candidates, gates, rationale=recipe.rationale, workers=workers),
                              gates.consistency)
    scores, judge_calls = None, 0
    if gates.judge.enabled:
        with step_errors():
            scores, judge_calls = run_judge(gated, teacher, gates.judge, frozen.config.teacher)
    frame = select(attach_judge(gated, scores), gates, recipe.multi_decode_select)
    report = quality_report(frame)
    context.add_output_metadata({
        **timer.metadata(rows=frame.height, row_latencies_ms=frame["gate_ms"].to_list()),
        **{k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None},
        "reject_reason_counts": dg.MetadataValue.json(report["reject_reason_counts"]),
        "exec_error_counts": dg.MetadataValue.json(report["exec_error_counts"]),
        "cleaning_counts": dg.MetadataValue.json(report["cleaning_counts"]),
        "judge_calls": judge_calls,
        "quality_report": dg.MetadataValue.md(markdown_table(report)),
    })
    return StageOutput(frame, {"quality_report.json": json.dumps(report, indent=2)})


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "gates"}, kinds={"polars"})
def distilled(context: dg.AssetExecutionContext, run_config: RunConfigResource, filtered: StageOutput) -> StageOutput:
    """Kept samples only, plus `sft.jsonl` (chat format) and, by recipe, preference pairs.

    Reads filtered: kept, cleaned_sql, rationale, messages, judge_score and ids.
    Writes: sample_id, candidate_id, split, db_id, question, schema, sql, rationale,
    judge_score, messages. Side files: sft.jsonl, preference_pairs.jsonl/.parquet.
    """
    timer = StageTimer()
    recipe = run_config.for_partition(context).config.recipe
    kept = filtered.frame.filter(pl.col("kept"))
    files: dict[str, str | bytes] = {
        "sft.jsonl": sft_export.to_jsonl([sft_export.sft_record(r, recipe.rationale) for r in kept.iter_rows(named=True)])}
    pairs = sft_export.preference_pairs(filtered.frame) if recipe.preference_pairs else []
    if recipe.preference_pairs:
        files["preference_pairs.jsonl"] = sft_export.to_jsonl(pairs)
        files["preference_pairs.parquet"] = sft_export.pairs_parquet(pairs)
    context.add_output_metadata({**timer.metadata(rows=kept.height), "kept": kept.height,
                                 "preference_pairs": len(pairs)})
    return StageOutput(sft_export.distilled_frame(filtered.frame), files)
