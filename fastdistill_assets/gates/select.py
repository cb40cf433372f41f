"""Final selection: judge scores, thresholds, and best-of-n for multi-decode."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from fastdistill_assets.config.models import GatesConfig


def deterministic_score(exec_ok: bool, gold_match: bool | None, n_rows: int) -> float:
    """Without a judge: 1.0 gold match, 0.5 executed with rows, 0.25 executed empty, 0.0 otherwise."""
    if not exec_ok:
        return 0.0
    if gold_match:
        return 1.0
    return 0.5 if n_rows else 0.25


JudgeScores = Mapping[str, tuple[float | None, str | None]]  # candidate_id -> (score, error reason)


def attach_judge(frame: pl.DataFrame, scores: JudgeScores | None) -> pl.DataFrame:
    """Add judge_score / judge_source / judge_error. ``scores=None``: deterministic scores."""
    if scores is None:
        values = [deterministic_score(bool(e), g, n or 0) for e, g, n in
                  frame.select("exec_ok", "gold_match", "result_rows").iter_rows()]
        return frame.with_columns(pl.Series("judge_score", values, pl.Float64),
                                  pl.lit("deterministic").alias("judge_source"),
                                  pl.lit(None, pl.String).alias("judge_error"))
    ids = frame["candidate_id"].to_list()
    return frame.with_columns(
        pl.Series("judge_score", [scores.get(i, (None, None))[0] for i in ids], pl.Float64),
        pl.Series("judge_source", ["llm" if i in scores else None for i in ids], pl.String),
        pl.Series("judge_error", [scores.get(i, (None, None))[1] for i in ids], pl.String))


def select(frame: pl.DataFrame, gates: GatesConfig, multi_decode: bool) -> pl.DataFrame:
    """Set the final ``reject_reason`` and ``kept`` for every candidate.

    With ``execution.empty_result: judge``, a candidate whose result is empty is kept only
    with an LLM judge score of at least ``judge.min_score``.
    """
    reasons = []
    judge_empty = gates.execution.empty_result == "judge"
    for reason, score, judge_error, rows in frame.select("reject_reason", "judge_score", "judge_error",
                                                         "result_rows").iter_rows():
        if reason == "gold_mismatch" and not gates.select.require_gold_match:
            reason = None
        if reason is None and gates.judge.enabled and score is None:
            reason = judge_error or "judge_unscored"
        if reason is None and score is not None and score < gates.select.min_judge_score:
            reason = "judge_below_threshold"
        if reason is None and judge_empty and rows == 0 and score < gates.judge.min_score:
            reason = "empty_result_judged_wrong"
        reasons.append(reason)
    frame = frame.with_columns(pl.Series("reject_reason", reasons, pl.String))
    if multi_decode:
        best = (frame.filter(pl.col("reject_reason").is_null())
                .with_columns(pl.col("cleaned_sql").str.len_chars().alias("_len"))
                .sort(["sample_id", "gold_match", "judge_score", "_len", "generation_index"],
                      descending=[False, True, True, False, False], nulls_last=True)
                .unique(subset="sample_id", keep="first")["candidate_id"])
        frame = frame.with_columns(
            pl.when(pl.col("reject_reason").is_null() & ~pl.col("candidate_id").is_in(best.implode()))
            .then(pl.lit("not_selected")).otherwise(pl.col("reject_reason")).alias("reject_reason"))
    return frame.with_columns(pl.col("reject_reason").is_null().alias("kept"))
