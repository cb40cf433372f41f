"""The filtered stage over one chunk of whole samples: every gate in order, then selection.

Per chunk: the per-candidate gates (``pipeline``), self-consistency for gold-free samples, the
judge, selection; the shadow verdicts of labeled samples (``shadow``); then, with
``teacher.escalate``, the unsettled gold-free samples asked again of the stronger teacher
(``escalation``), whose candidates are gated the same way and placed right after their sample's,
and, with ``escalate.calibrate``, the labeled samples the gold-free path would leave unsettled
(their answers are ``calibration_only`` rows with a shadow verdict, never a label).
Every row says where a kept label comes from: ``label_source`` gold, teacher or escalated.
"""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from fastdistill_assets.config.models import GatesConfig, RecipeConfig, TeacherConfig
from fastdistill_assets.gates.consistency import apply_consistency
from fastdistill_assets.gates.escalation import (
    CALIBRATION_ONLY,
    ESCALATED,
    EscalationSummary,
    Escalator,
    decide_escalated,
    escalation_requests,
    unsettled_samples,
)
from fastdistill_assets.gates.judge import run_judge
from fastdistill_assets.gates.pipeline import GateWorkers, gate_frame
from fastdistill_assets.gates.select import JudgeScores, attach_judge, select
from fastdistill_assets.gates.shadow import hide_gold, shadow_verdicts, shadow_view
from fastdistill_assets.teacher.gateway import ProviderGateway


def _judged(gated: pl.DataFrame, gates: GatesConfig, gateway: ProviderGateway,
            teacher: TeacherConfig) -> tuple[JudgeScores | None, int]:
    """The LLM judge's scores (None without a judge: deterministic scores) and its calls."""
    if not gates.judge.enabled:
        return None, 0
    return run_judge(gated, gateway, gates.judge, teacher)


def _label_source(frame: pl.DataFrame, escalated: bool = False) -> pl.DataFrame:
    source = pl.lit(ESCALATED) if escalated else \
        pl.when(pl.col("gold_sql").is_not_null()).then(pl.lit("gold")).otherwise(pl.lit("teacher"))
    return frame.with_columns(source.alias("label_source"))


def gate_chunk(candidates: pl.DataFrame, gates: GatesConfig, recipe: RecipeConfig, gateway: ProviderGateway,
               teacher: TeacherConfig, runner: GateWorkers | None = None,
               escalator: Escalator | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Verdicts for a chunk holding every candidate of its samples (self-consistency and
    best-of-n look across a sample's candidates). ``runner``: the stage's gate workers (None: this
    process); ``escalator``: the stage's escalation teacher (None: no escalation). Returns the
    frame and the chunk's summary: ``judge_calls`` and ``escalation`` (EscalationSummary JSON or None)."""
    gated = gate_frame(candidates, gates, rationale=recipe.rationale, runner=runner)
    scores, judge_calls = _judged(gated, gates, gateway, teacher)
    frame = select(attach_judge(apply_consistency(gated, gates.consistency), scores), gates, recipe.multi_decode_select)
    shadow = shadow_verdicts(gated, gates, recipe.multi_decode_select, scores)
    frame = _label_source(frame.with_columns(shadow["shadow_kept"], shadow["shadow_reason"]))
    summary: dict[str, Any] = {"judge_calls": judge_calls, "escalation": None}
    if escalator is None:
        return frame, summary
    frame, outcome, esc_calls = _escalate(frame, gated, gates, recipe, gateway, teacher, runner, escalator)
    summary["judge_calls"] += esc_calls
    summary["escalation"] = outcome.to_json()
    return frame, summary


def _escalate(frame: pl.DataFrame, gated: pl.DataFrame, gates: GatesConfig, recipe: RecipeConfig,
              gateway: ProviderGateway, teacher: TeacherConfig, runner: GateWorkers | None,
              escalator: Escalator) -> tuple[pl.DataFrame, EscalationSummary, int]:
    """Ask the stronger teacher about the unsettled gold-free samples (and, to calibrate, the labeled
    samples the gold-free path would leave unsettled); gate its answers; put them after their
    sample's rows. Returns the frame, the escalation's summary and the judge calls it made."""
    escalate, outcome = escalator.escalate, EscalationSummary()
    # a sample none of whose first answers ran has nothing to confirm a single escalated answer with
    alone = escalate.trust_single or escalate.num_generations >= gates.consistency.min_executed
    gold_free = unsettled_samples(frame, escalate.reasons, unexecuted=alone)
    labeled = unsettled_samples(shadow_view(frame), escalate.reasons, unexecuted=alone) if escalate.calibrate else []
    if not gold_free and not labeled:
        return frame, outcome, 0
    first_index = max(escalator.first_index, int(cast(int, frame["generation_index"].max()) or 0) + 1)
    requests, carried = escalation_requests(frame, gold_free + labeled, escalate.num_generations, first_index)
    asked, outcome.account, outcome.model = escalator.frame(requests, carried)
    esc_gated = gate_frame(asked, gates, rationale=recipe.rationale, runner=runner)
    scores, judge_calls = _judged(esc_gated, gates, gateway, teacher)
    first = gated.filter(pl.col("sample_id").is_in(gold_free + labeled))
    free = select(attach_judge(decide_escalated(esc_gated.filter(pl.col("gold_sql").is_null()), first, gates, escalate),
                               scores), gates, recipe.multi_decode_select).with_columns(
        pl.lit(None, pl.Boolean).alias("shadow_kept"), pl.lit(None, pl.String).alias("shadow_reason"))
    answered = attach_judge(esc_gated.filter(pl.col("gold_sql").is_not_null()), scores)
    shadow = select(attach_judge(decide_escalated(hide_gold(answered), hide_gold(first), gates, escalate), scores),
                    gates, recipe.multi_decode_select)
    calibration_rows = answered.with_columns(
        shadow["kept"].alias("shadow_kept"), shadow["reject_reason"].alias("shadow_reason"),
        pl.lit(None, pl.Float64).alias("agreement"), pl.lit(CALIBRATION_ONLY).alias("reject_reason"),
        pl.lit(False).alias("kept"))
    outcome.samples, outcome.calibration_samples = len(gold_free), len(labeled)
    outcome.kept = free.filter(pl.col("kept"))["sample_id"].n_unique()
    escalated = _label_source(pl.concat([free, calibration_rows], how="diagonal_relaxed"), escalated=True)
    return after_their_samples(frame, escalated), outcome, judge_calls


def after_their_samples(frame: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ``extra``'s rows placed right after the last row of their sample (a sample's
    rows stay contiguous, as chunking needs), each group in its own order; ``frame``'s columns (one
    that ``extra`` lacks is null there)."""
    position = frame.with_row_index("_row").group_by("sample_id").agg(pl.col("_row").max().alias("_at"))
    ordered = pl.concat([frame.with_row_index("_row").with_columns(pl.col("_row").alias("_at"), pl.lit(0).alias("_k")),
                         extra.with_row_index("_row").join(position, on="sample_id", how="left")
                         .with_columns(pl.lit(1).alias("_k"))], how="diagonal_relaxed")
    return ordered.sort("_at", "_k", "_row").select(frame.columns)
