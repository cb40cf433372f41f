"""Quality report built from the filtered frame: numbers, and a markdown table for humans."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    values = frame.filter(pl.col(column).is_not_null())
    return dict(sorted(values.group_by(column).len().iter_rows(), key=lambda kv: (-kv[1], kv[0])))


def quality_report(filtered: pl.DataFrame) -> dict[str, Any]:
    """kept, rejected, p_keep, pass rates per gate, judge stats and reason counts.

    Every rate's denominator is the number of candidates, so the rates of consecutive
    gates can be compared directly.
    """
    n = filtered.height
    kept = int(filtered["kept"].sum()) if n else 0
    scores = filtered["judge_score"].drop_nulls().to_numpy() if n else np.array([])
    report: dict[str, Any] = {
        "candidates": n,
        "samples": filtered["sample_id"].n_unique() if n else 0,
        "kept": kept,
        "rejected": n - kept,
        "p_keep": _rate(kept, n),
        "teacher_error_rate": _rate(int(filtered["error"].is_not_null().sum()), n),
        "empty_output_rate": _rate(int((filtered["rule_reason"] == "empty_output").sum()), n),
        "rule_pass_rate": _rate(int(filtered["rule_ok"].fill_null(False).sum()), n),
        "parse_pass_rate": _rate(int(filtered["parse_ok"].fill_null(False).sum()), n),
        "exec_pass_rate": _rate(int(filtered["exec_ok"].fill_null(False).sum()), n),
        "gold_match_rate": _rate(int(filtered["gold_match"].fill_null(False).sum()), n),
        "judge_count": int(scores.size),
        "judge_mean": round(float(scores.mean()), 6) if scores.size else None,
        "judge_p50": round(float(np.percentile(scores, 50)), 6) if scores.size else None,
        "judge_p90": round(float(np.percentile(scores, 90)), 6) if scores.size else None,
        "reject_reason_counts": _counts(filtered, "reject_reason"),
        "exec_error_counts": _counts(filtered, "exec_error"),
        "cleaning_counts": _cleaning_counts(filtered),
    }
    return report


def _cleaning_counts(filtered: pl.DataFrame) -> dict[str, int]:
    actions = filtered["clean_actions"].drop_nulls().str.split(",").explode()
    actions = actions.filter(actions != "")
    return dict(sorted(actions.value_counts().iter_rows(), key=lambda kv: (-kv[1], kv[0]))) if actions.len() else {}


def markdown_table(report: dict[str, Any]) -> str:
    """A readable summary for the Dagster UI."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in report.items():
        if not isinstance(value, dict):
            lines.append(f"| {key} | {value if value is not None else '-'} |")
    for title in ("reject_reason_counts", "exec_error_counts", "cleaning_counts"):
        if report.get(title):
            lines += ["", f"| {title} | count |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in report[title].items()]
    return "\n".join(lines)
