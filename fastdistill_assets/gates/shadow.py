"""Shadow calibration: the gold-free verdict of every labeled sample, as if its gold were absent.

A labeled sample's label still comes from its gold. Beside it, its candidates go through the
gold-free gates (grounding, self-consistency with the degenerate-result rule, the judge's scores,
best-of-n) with the gold hidden; whichever answer that path would have kept is then scored against
the gold. So every run with some labeled questions measures the precision of the labels it makes
without gold, at no extra label cost. With ``teacher.escalate.calibrate``, the labeled samples that
path would leave unsettled are escalated too (``calibration_only`` rows, their label still the
gold's), so the escalated labels are measured as well, at the cost of those escalation calls.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from fastdistill_assets.config.models import GatesConfig
from fastdistill_assets.core.proportions import wilson_interval
from fastdistill_assets.gates.consistency import apply_consistency
from fastdistill_assets.gates.pipeline import grounding_reason
from fastdistill_assets.gates.select import JudgeScores, attach_judge, select

GOLD_REASONS = ("gold_mismatch", "gold_unavailable")   # verdicts that only gold can give


def hide_gold(labeled: pl.DataFrame) -> pl.DataFrame:
    """Labeled candidates as the gold-free gates see them: no gold, no gold match, and in place of a
    gold verdict (or none) the grounding verdict. Reads reject_reason, ungrounded, missing_numbers."""
    grounding = [grounding_reason(u, m) for u, m in labeled.select("ungrounded", "missing_numbers").iter_rows()]
    reason = pl.col("reject_reason")
    return labeled.with_columns(pl.Series("_grounding", grounding, pl.String)).with_columns(
        pl.lit(None, pl.String).alias("gold_sql"), pl.lit(None, pl.Boolean).alias("gold_match"),
        pl.when(reason.is_null() | reason.is_in(GOLD_REASONS)).then(pl.col("_grounding"))
        .otherwise(reason).alias("reject_reason")).drop("_grounding")


def measurable(frame: pl.DataFrame) -> pl.DataFrame:
    """The labeled rows of samples whose gold could be run (a sample with ``gold_unavailable`` has no
    right answer to score a shadow verdict against)."""
    broken = frame.filter(pl.col("reject_reason") == "gold_unavailable")["sample_id"].unique()
    return frame.filter(pl.col("gold_sql").is_not_null() & ~pl.col("sample_id").is_in(broken.implode()))


def shadow_view(frame: pl.DataFrame) -> pl.DataFrame:
    """The measurable labeled rows of a decided frame as if their shadow verdict were the real one
    (gold hidden, ``kept`` = ``shadow_kept``): what the gold-free path would have left unsettled, for
    escalation."""
    return measurable(frame).with_columns(
        pl.lit(None, pl.String).alias("gold_sql"), pl.col("shadow_kept").fill_null(False).alias("kept"),
        pl.col("shadow_reason").alias("reject_reason"))


def shadow_verdicts(gated: pl.DataFrame, gates: GatesConfig, multi_decode: bool,
                    scores: JudgeScores | None) -> pl.DataFrame:
    """``gated`` (after the per-candidate gates, before consistency) plus ``shadow_kept`` and
    ``shadow_reason``: the gold-free path's verdict on each labeled candidate (null on gold-free
    rows, whose verdict is the real one). Reads sample_id, candidate_id, gold_sql, reject_reason,
    ungrounded, missing_numbers, result_signature, result_degenerate and the columns :func:`select` reads."""
    labeled = gated.with_row_index("_shadow_row").filter(pl.col("gold_sql").is_not_null())
    kept: list[bool | None] = [None] * gated.height
    reasons: list[str | None] = [None] * gated.height
    if labeled.height:
        shadow = select(attach_judge(apply_consistency(hide_gold(labeled), gates.consistency), scores), gates,
                        multi_decode)
        for i, is_kept, why in shadow.select("_shadow_row", "kept", "reject_reason").iter_rows():
            kept[i], reasons[i] = is_kept, why
    return gated.with_columns(pl.Series("shadow_kept", kept, pl.Boolean),
                              pl.Series("shadow_reason", reasons, pl.String))


def _precision(correct: int, kept: int) -> dict[str, Any]:
    lower, upper = wilson_interval(correct, kept)
    return {"kept": kept, "correct": correct, "precision": round(correct / kept, 6) if kept else None,
            "precision_lower": round(lower, 6) if kept else None, "precision_upper": round(upper, 6) if kept else None}


def calibration(frame: pl.DataFrame) -> dict[str, Any] | None:
    """The gold-free gates' precision and recall measured on the labeled samples' shadow verdicts,
    or None when the frame has no labeled sample whose gold runs (nothing to measure on).

    precision: of the labeled samples the gold-free path would keep, the share whose kept answers
    all match the gold (95 % Wilson interval), overall and per ``label_source`` of the answer it
    would keep (teacher, or escalated where the run calibrates its escalation); recall: of the
    labeled samples with at least one candidate matching the gold, the share it would keep with a
    matching answer. Reads sample_id, gold_sql, gold_match, shadow_kept, shadow_reason (counted per
    reason over the first teacher's answers: what the gold-free gates would have rejected them for),
    label_source, reject_reason.
    """
    labeled = measurable(frame)
    if labeled.height == 0:
        return None
    shadow_kept = pl.col("shadow_kept").fill_null(False)
    matched = pl.col("gold_match").fill_null(False)
    per_sample = labeled.group_by("sample_id").agg(
        shadow_kept.any().alias("kept"), (shadow_kept & ~matched).any().alias("wrong"),
        matched.any().alias("reachable"),
        # a labeled sample's own rows say gold; without it the first teacher's answer would be the label
        pl.when(pl.col("label_source") == "escalated").then(pl.lit("escalated")).otherwise(pl.lit("teacher"))
        .filter(shadow_kept).first().alias("source"))
    kept = per_sample.filter(pl.col("kept"))
    correct = int((~kept["wrong"]).sum())
    reachable = int(per_sample["reachable"].sum())
    reasons = labeled.filter(pl.col("shadow_reason").is_not_null() & (pl.col("label_source") != "escalated")) \
        .group_by("shadow_reason").len()
    by_source = {source: _precision(int((~group["wrong"]).sum()), group.height)
                 for (source,), group in kept.sort("source").group_by("source", maintain_order=True)}
    return {"samples": per_sample.height, **_precision(correct, kept.height), "by_label_source": by_source,
            "reachable": reachable, "recall": round(correct / reachable, 6) if reachable else None,
            "shadow_reason_counts": dict(sorted(reasons.iter_rows(), key=lambda kv: (-kv[1], kv[0]))),
            "measured_on": "labeled samples, gold hidden from the gold-free gates (shadow calibration)"}
