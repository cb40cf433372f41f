"""Gate assets: filtered (every verdict) and distilled (kept samples and exports)."""

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import polars as pl

from fastdistill_assets.config.models import FrozenRun
from fastdistill_assets.core.processes import step_workers
from fastdistill_assets.core.timing import StageTimer
from fastdistill_assets.defs.assets.sharding import (
    ShardedStage,
    StageStep,
    row_chunks,
    sharded_asset,
    stage_metadata,
)
from fastdistill_assets.defs.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.defs.resources import RunConfigResource, step_errors
from fastdistill_assets.gates import sft_export
from fastdistill_assets.gates.escalation import EscalationSummary, Escalator
from fastdistill_assets.gates.judge import judge_endpoint
from fastdistill_assets.gates.label_cost import (
    CALIBRATION,
    ESCALATION,
    TEACHER,
    add_counts,
    label_cost,
    token_counts,
)
from fastdistill_assets.gates.pipeline import GateWorkers, gate_workers
from fastdistill_assets.gates.quality_report import (
    examples_table,
    label_examples,
    markdown_table,
    merge_examples,
    quality_report,
    report_frame,
)
from fastdistill_assets.gates.stage import gate_chunk
from fastdistill_assets.store.chunks import (
    ChunkedFrame,
    ChunkSpool,
    ChunkWork,
    rechunk,
    spool_fingerprint,
)
from fastdistill_assets.store.storage import StageScan
from fastdistill_assets.teacher.gateway import ProviderGateway


@contextmanager
def _gate(step: StageStep) -> Iterator[ChunkWork]:
    frozen, context = step.frozen, step.context
    gates, config = frozen.gates, frozen.config
    workers = gate_workers(step_workers(config.scale.workers, config.scale.shards), _chunk_rows(frozen))
    escalate = config.teacher.escalate
    with GateWorkers(workers, gates.execution) as runner, contextlib.ExitStack() as stack:  # one for the step's chunks
        escalator = stack.enter_context(Escalator(step.teacher, escalate, config.decode)) if escalate else None

        def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
            frame, summary = gate_chunk(chunk, gates, config.recipe, step.teacher, config.teacher, runner, escalator)
            escalated = summary["escalation"]["samples"] if summary["escalation"] else 0
            context.log.info(f"gates: chunk {index} done ({frame.height} candidates"
                             + (f", {escalated} samples escalated)" if escalate else ")"))
            return frame, {**summary, "workers": workers, "examples": label_examples(frame),
                           "tokens": token_counts(frame)}
        yield work


def escalation_metadata(step: StageStep, summaries: list[dict]) -> dict:
    """The escalation teacher's figures over the stage: samples asked and kept, requests, calls,
    cache hits, tokens and cost (``escalation_*``), or nothing when the run does not escalate."""
    escalate = step.frozen.config.teacher.escalate
    if escalate is None:
        return {}
    total, models = EscalationSummary(), set()
    for summary in summaries:
        chunk = EscalationSummary.from_json(summary["escalation"])
        total.samples, total.kept = total.samples + chunk.samples, total.kept + chunk.kept
        total.calibration_samples += chunk.calibration_samples
        total.account.merge(chunk.account)
        models |= {chunk.model} if chunk.model else set()
    account = total.account.metadata(step.teacher.prices(escalate.provider))
    keep = ("requests", "calls", "cache_hits", "errors", "input_tokens", "output_tokens", "cost_usd")
    return {"escalation_samples": total.samples, "escalation_kept_samples": total.kept,
            "escalation_calibration_samples": total.calibration_samples,
            **{f"escalation_{k}": account[k] for k in keep if k in account},
            "escalation_provider": escalate.provider, "escalation_model": ", ".join(sorted(models)) or "-"}


def _publish(step: StageStep, spool: ChunkSpool, count: int) -> ChunkedFrame:
    parts = spool.parts(count)
    summaries = [spool.summary(i) for i in range(count)]
    report = quality_report(report_frame(pl.scan_parquet(parts)))
    config = step.frozen.config.teacher
    escalation_prices = step.teacher.prices(config.escalate.provider) if config.escalate else (None, None)
    prices = {TEACHER: step.teacher.prices(config.provider, batch=config.mode == "batch"),
              ESCALATION: escalation_prices, CALIBRATION: escalation_prices}
    cost = label_cost(add_counts(s["tokens"] for s in summaries), prices, report["kept_samples"])
    report = {**report, "label_cost": cost, "examples": merge_examples([s["examples"] for s in summaries])}
    step.context.add_output_metadata({
        **stage_metadata(step, spool, count, report["candidates"],
                         pl.scan_parquet(parts).select("gate_ms").collect()["gate_ms"]),
        **{k: v for k, v in report.items() if isinstance(v, (int, float)) and v is not None},
        "reject_reason_counts": dg.MetadataValue.json(report["reject_reason_counts"]),
        "exec_error_counts": dg.MetadataValue.json(report["exec_error_counts"]),
        "cleaning_counts": dg.MetadataValue.json(report["cleaning_counts"]),
        "judge_calls": sum(s["judge_calls"] for s in summaries),
        **{key: cost[source] for key, source in (("teacher_cost_usd", "total_usd"),
                                                 ("cost_per_kept_sample_usd", "cost_per_kept_sample_usd"))
           if cost[source] is not None},   # unknown where a teacher has no prices
        "teacher_cost_usd_by_teacher": dg.MetadataValue.json(cost["teacher_cost_usd"]),
        **escalation_metadata(step, summaries),
        "gate_workers": max(s["workers"] for s in summaries),
        "quality_report": dg.MetadataValue.md(markdown_table(report)),
        "label_examples": dg.MetadataValue.md(examples_table(report["examples"])),
    })
    return ChunkedFrame(parts, files={"quality_report.json": json.dumps(report, indent=2)}, spool=spool)


def _chunk_rows(frozen: FrozenRun) -> int:
    """Candidates per chunk: ``scale.chunk_rows`` samples' worth."""
    return frozen.config.scale.chunk_rows * frozen.config.decode.num_generations


def _judge(frozen: FrozenRun, teacher: ProviderGateway) -> str | None:
    """The model the judge reaches (a null ``judge.model`` is the gateway's default), if it judges."""
    if not frozen.gates.judge.enabled:
        return None
    judge = judge_endpoint(frozen.gates.judge, frozen.config.teacher)
    return teacher.teacher_identity(judge.provider, judge.model, judge.overrides)


# What a part of filtered holds and its summary says; a new version never reuses older parts.
GATES_PART_VERSION = 2   # 2: shadow verdicts, escalation, label examples and token counts


def _escalation_teacher(frozen: FrozenRun, teacher: ProviderGateway) -> str | None:
    """The model the escalation reaches (a null model is the provider's default), if the run escalates."""
    escalate = frozen.config.teacher.escalate
    if escalate is None:
        return None
    return teacher.teacher_identity(escalate.provider, escalate.model, escalate.endpoint_overrides())


GATES_STAGE = ShardedStage(
    name="filtered",
    chunks=row_chunks(_chunk_rows, key="sample_id"),
    depends_on=lambda step, candidates: {
        "config": step.frozen.config_hash, "gates": step.frozen.gates_hash, "rows": _chunk_rows(step.frozen),
        "judge": _judge(step.frozen, step.teacher), "escalate": _escalation_teacher(step.frozen, step.teacher),
        "candidates": candidates.manifest.get("content_hash") if candidates else None,
        "parts": GATES_PART_VERSION},
    work=_gate,
    finish=_publish,
    uses_teacher=True,
)

filtered = sharded_asset(GATES_STAGE, "teacher_candidates", pool=TEACHER_POOL, partitions_def=run_partitions,
                         tags={"plane": "gates"}, kinds={"sqlglot", "sqlite"}, description="""
Every candidate with each gate's verdict and reason; nothing is dropped.

Samples with gold pass the gold match; samples without gold (gold_sql null) pass self-consistency
across their candidates instead. Streams in chunks of whole samples (`scale.chunk_rows` samples),
resuming from the chunks a killed step finished; with `scale.shards` K the chunks are spread over
K Dagster steps (`filtered_shard`). Its steps are in the `teacher` pool because of the LLM judge
and the escalation teacher.

Reads teacher_candidates: candidate_id, sample_id, raw_output, error, db_path, dialect,
gold_sql, question, schema, messages. Adds: rationale, cleaned_sql, clean_actions, rule_ok,
rule_reason, parse_ok, parse_error, exec_ok, exec_error, exec_error_detail, exec_ms,
result_rows, result_signature, result_preview, result_degenerate, ungrounded, missing_numbers,
gold_signature, gold_match, agreement, judge_score, judge_source, judge_error, reject_reason, kept,
gate_ms, shadow_kept, shadow_reason (labeled samples: the gold-free verdict with the gold hidden)
and label_source (gold, teacher or escalated). With `teacher.escalate`, the stronger teacher's
answers to the unsettled gold-free samples are rows of their own, right after their sample's;
so are its answers to labeled samples the gold-free path would leave unsettled
(`calibration_only`, never a label: they measure the escalation).
Side file: quality_report.json (overall, per path: labeled, gold_free, the shadow calibration and
a few example labels).
""".strip())


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "gates"}, kinds={"polars"})
def distilled(context: dg.AssetExecutionContext, run_config: RunConfigResource, filtered: StageScan) -> ChunkedFrame:
    """Kept samples only, plus `sft.jsonl` (chat format) and, by recipe, preference pairs.
    Streams filtered chunk by chunk (whole samples), writing the side files as it goes.

    Reads filtered: kept, cleaned_sql, rationale, messages, judge_score, label_source and ids.
    Writes: sample_id, candidate_id, split, db_id, question, schema, sql, rationale,
    judge_score, label_source (gold, teacher or escalated), messages. Side files: sft.jsonl,
    preference_pairs.jsonl/.parquet.
    """
    timer = StageTimer()
    frozen = run_config.enter_step(context)
    recipe, chunk_rows = frozen.config.recipe, _chunk_rows(frozen)
    # under the run's writer lock (an asset step takes it): the parts of other inputs (an earlier
    # filtered, a step killed while publishing) can never be reused, so they go
    spool = ChunkSpool(run_config.work_dir(context, "distilled"), spool_fingerprint(
        config=frozen.config_hash, filtered=sft_export.untimed_content_hash(filtered), rows=chunk_rows), prune=True)
    exports = sft_export.Exports(spool.folder / "exports", recipe.rationale, recipe.preference_pairs)
    count = 0
    with step_errors(), exports:   # a full disk: one line naming the folder
        for index, chunk in enumerate(rechunk(filtered.row_groups(), chunk_rows, key="sample_id")):
            count += 1
            exports.add(chunk)
            if not spool.done(index):
                spool.write(index, sft_export.distilled_frame(chunk))
    context.add_output_metadata({**timer.metadata(rows=exports.kept), "kept": exports.kept,
                                 "preference_pairs": exports.pairs, "chunks": count})
    return ChunkedFrame(spool.parts(count), schema=sft_export.DISTILLED_SCHEMA, files=exports.files(), spool=spool)
