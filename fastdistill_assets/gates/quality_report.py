"""Quality report built from the filtered frame: numbers, and a markdown table for humans."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from fastdistill_assets.gates.escalation import label_candidates
from fastdistill_assets.gates.shadow import calibration


def _rate(numerator: int, denominator: int) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    values = frame.filter(pl.col(column).is_not_null())
    return dict(sorted(values.group_by(column).len().iter_rows(), key=lambda kv: (-kv[1], kv[0])))


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 6) if values.size else None


def path_report(frame: pl.DataFrame) -> dict[str, Any]:
    """Counts for one path (labeled or gold-free): candidates, samples, kept, reasons."""
    kept = frame.filter(pl.col("kept"))
    samples, kept_samples = frame["sample_id"].n_unique(), kept["sample_id"].n_unique()
    return {"candidates": frame.height, "samples": samples, "kept": kept.height, "kept_samples": kept_samples,
            "p_keep": _rate(kept_samples, samples) if samples else None,  # None: no sample on this path
            "reject_reason_counts": _counts(frame, "reject_reason")}


REPORT_COLUMNS = ["sample_id", "gold_sql", "kept", "agreement", "error", "rule_reason", "rule_ok", "parse_ok", "exec_ok",
                  "gold_match", "judge_score", "reject_reason", "exec_error", "clean_actions", "label_source",
                  "shadow_kept", "shadow_reason"]


def report_frame(filtered: pl.LazyFrame) -> pl.DataFrame:
    """The columns :func:`quality_report` reads, with ``gold_sql`` reduced to whether there is
    one (``""``: gold, null: none): what a large stage's report needs in memory."""
    return filtered.select(REPORT_COLUMNS).with_columns(
        pl.when(pl.col("gold_sql").is_null()).then(None).otherwise(pl.lit("")).alias("gold_sql")).collect()


def quality_report(filtered: pl.DataFrame) -> dict[str, Any]:
    """kept, rejected, p_keep, pass rates per gate, judge stats, reason counts, and the same
    per path: ``labeled`` (samples with gold, gold-match gate) and ``gold_free`` (samples
    without gold, self-consistency gate, with the agreement distribution over its samples,
    counting a sample none of whose candidates executed as agreement 0).

    ``p_keep`` is the share of samples (questions) with a kept candidate, whatever
    ``num_generations`` is. Every other overall rate's denominator is the number of candidates,
    so the rates of consecutive gates can be compared directly; ``gold_match_rate`` is over
    labeled candidates only, and the path metrics are null for a path with no candidates.
    Every figure but the shadow calibration's leaves the ``calibration_only`` rows out.
    """
    shadow = calibration(filtered)
    filtered = label_candidates(filtered)
    n = filtered.height
    overall = path_report(filtered)
    labeled = filtered.filter(pl.col("gold_sql").is_not_null())
    gold_free = filtered.filter(pl.col("gold_sql").is_null())
    # per gold-free sample; a sample none of whose candidates executed has agreement 0 here
    per_sample = (gold_free.group_by("sample_id").agg(pl.col("agreement").first())["agreement"]
                  if gold_free.height else pl.Series("agreement", [], pl.Float64))
    agreements = per_sample.fill_null(0.0).to_numpy()
    paths = {"labeled": path_report(labeled),
             "gold_free": {**path_report(gold_free), "agreement_p50": _percentile(agreements, 50),
                           "agreement_p90": _percentile(agreements, 90),
                           "samples_nothing_executed": per_sample.null_count()}}
    kept = int(filtered["kept"].sum()) if n else 0
    scores = filtered["judge_score"].drop_nulls().to_numpy() if n else np.array([])
    report: dict[str, Any] = {
        "candidates": n,
        "samples": overall["samples"],
        "kept": kept,
        "kept_samples": overall["kept_samples"],
        "rejected": n - kept,
        "p_keep": overall["p_keep"] or 0.0,
        "teacher_error_rate": _rate(int(filtered["error"].is_not_null().sum()), n),
        "empty_output_rate": _rate(int((filtered["rule_reason"] == "empty_output").sum()), n),
        "rule_pass_rate": _rate(int(filtered["rule_ok"].fill_null(False).sum()), n),
        "parse_pass_rate": _rate(int(filtered["parse_ok"].fill_null(False).sum()), n),
        "exec_pass_rate": _rate(int(filtered["exec_ok"].fill_null(False).sum()), n),
        "gold_match_rate": (_rate(int(labeled["gold_match"].fill_null(False).sum()), labeled.height)
                            if labeled.height else None),
        "labeled_candidates": labeled.height,
        "gold_free_candidates": gold_free.height,
        "labeled_p_keep": paths["labeled"]["p_keep"],
        "gold_free_p_keep": paths["gold_free"]["p_keep"],
        "agreement_p50": paths["gold_free"]["agreement_p50"],
        "agreement_p90": paths["gold_free"]["agreement_p90"],
        "judge_count": int(scores.size),
        "judge_mean": round(float(scores.mean()), 6) if scores.size else None,
        "judge_p50": _percentile(scores, 50),
        "judge_p90": _percentile(scores, 90),
        # the gold-free gate's precision, measured on the labeled samples with their gold hidden
        "gold_free_precision": shadow["precision"] if shadow else None,
        "gold_free_precision_lower": shadow["precision_lower"] if shadow else None,
        "gold_free_recall": shadow["recall"] if shadow else None,
        "calibration": shadow or {},
        "kept_samples_by_label_source": _counts(filtered.filter(pl.col("kept")).unique("sample_id"), "label_source"),
        "reject_reason_counts": _counts(filtered, "reject_reason"),
        "exec_error_counts": _counts(filtered, "exec_error"),
        "cleaning_counts": _cleaning_counts(filtered),
        "paths": paths,
    }
    return report


def _cleaning_counts(filtered: pl.DataFrame) -> dict[str, int]:
    actions = filtered["clean_actions"].drop_nulls().str.split(",").explode()
    actions = actions.filter(actions != "")
    return dict(sorted(actions.value_counts().iter_rows(), key=lambda kv: (-kv[1], kv[0]))) if actions.len() else {}


EXAMPLES_PER_KIND = 2   # kept labels per label source and rejected answers per reason shown to a user
_EXAMPLE_TEXT = 160     # characters of a question, SQL or result preview in an example


def label_examples(frame: pl.DataFrame, per_kind: int = EXAMPLES_PER_KIND) -> list[dict[str, Any]]:
    """A few answers a user can look at: ``per_kind`` kept labels per label source and rejected
    answers per reject reason, in the frame's order (question, SQL, result preview, verdict, source).
    Reads question, raw_output, cleaned_sql, result_preview, kept, reject_reason, label_source."""
    frame = label_candidates(frame)
    if frame.height == 0:
        return []
    short = [pl.col(c).cast(pl.String).str.slice(0, _EXAMPLE_TEXT) for c in ("question", "result_preview")]
    sql = pl.coalesce("cleaned_sql", "raw_output").cast(pl.String).str.slice(0, _EXAMPLE_TEXT).alias("sql")
    verdict = pl.when(pl.col("kept")).then(pl.lit("kept")).otherwise(pl.col("reject_reason")).alias("verdict")
    return (frame.select(*short, sql, verdict, "label_source")
            .with_columns(pl.when(pl.col("verdict") == "kept").then(pl.concat_str(pl.lit("kept|"), "label_source"))
                          .otherwise(pl.col("verdict")).alias("_kind"))
            .group_by("_kind", maintain_order=True).head(per_kind).drop("_kind").to_dicts())


def merge_examples(parts: list[list[dict[str, Any]]], per_kind: int = EXAMPLES_PER_KIND) -> list[dict[str, Any]]:
    """The first ``per_kind`` examples of each kind over the chunks' examples, kept labels first."""
    seen: dict[tuple[str | None, str | None], int] = {}
    chosen = []
    for example in (e for part in parts for e in part):
        kind = (example["verdict"], example["label_source"] if example["verdict"] == "kept" else None)
        if seen.get(kind, 0) < per_kind:
            seen[kind] = seen.get(kind, 0) + 1
            chosen.append(example)
    return sorted(chosen, key=lambda e: e["verdict"] != "kept")


def examples_table(examples: list[dict[str, Any]]) -> str:
    """The examples as a markdown table for the Dagster UI."""
    def cell(value: Any) -> str:
        return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| verdict | label source | question | SQL | result |", "|---|---|---|---|---|"]
    lines += [f"| {cell(e['verdict'])} | {cell(e['label_source'])} | {cell(e['question'])} | {cell(e['sql'])} | "
              f"{cell(e['result_preview'])} |" for e in examples]
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> str:
    """A readable summary for the Dagster UI."""
    lines = ["| metric | value |", "|---|---|"]
    for key, value in report.items():
        if not isinstance(value, (dict, list)):
            lines.append(f"| {key} | {value if value is not None else '-'} |")
    for title in ("kept_samples_by_label_source", "reject_reason_counts", "exec_error_counts", "cleaning_counts"):
        if report.get(title):
            lines += ["", f"| {title} | count |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in report[title].items()]
    return "\n".join(lines + ["", paths_table(report["paths"])])


def paths_table(paths: dict[str, dict[str, Any]]) -> str:
    """Labeled vs gold-free side by side: counts, keep rate, agreement, reject reasons."""
    labeled, gold_free = paths["labeled"], paths["gold_free"]
    lines = ["| path | labeled | gold_free |", "|---|---|---|"]
    for key in ("samples", "candidates", "kept", "kept_samples", "p_keep", "agreement_p50", "agreement_p90"):
        left, right = labeled.get(key), gold_free.get(key)
        lines.append(f"| {key} | {'-' if left is None else left} | {'-' if right is None else right} |")
    for reason in sorted({*labeled["reject_reason_counts"], *gold_free["reject_reason_counts"]}):
        lines.append(f"| rejected: {reason} | {labeled['reject_reason_counts'].get(reason, 0)} | "
                     f"{gold_free['reject_reason_counts'].get(reason, 0)} |")
    return "\n".join(lines)
