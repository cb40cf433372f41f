"""The eval report: numbers, hard-gate verdicts and a markdown summary."""

from __future__ import annotations

from typing import Any

from fastdistill_assets.config.models import EvalGates, FrozenRun
from fastdistill_assets.evaluation.metrics import (
    Accuracy,
    PairedComparison,
    WinRate,
    parity_lower_bound,
)
from fastdistill_assets.gates.label_cost import cost_line
from fastdistill_assets.gates.quality_report import paths_table


def win_rate_threshold(gates: EvalGates, n: int, previous: dict[str, Any] | None) -> float:
    setting = gates.online_win_rate_threshold
    if setting == "teacher_lower_bound":
        return round(parity_lower_bound(n), 6)
    if setting == "previous_lower_bound":
        if not previous:
            raise ValueError("online_win_rate_threshold=previous_lower_bound needs eval.baseline.run_id")
        return previous["online_win_rate"]["online_win_rate_lower_bound"]
    return float(setting)


def exact_accuracy(summary: dict[str, Any]) -> float:
    """correct / n where known (the rounded ``accuracy`` would misjudge a tie), else the value."""
    return summary["correct"] / summary["n"] if summary.get("n") else summary["accuracy"]


def beats_significantly(paired: PairedComparison, alpha: float) -> bool:
    """The first model is right on more questions than the second and McNemar's p < alpha."""
    return paired.first_only > paired.second_only and paired.mcnemar_p < alpha


def baseline_gate(student: Accuracy, baseline_accuracy: float, paired: PairedComparison | None,
                  gates: EvalGates) -> dict[str, Any]:
    """test_exec_accuracy_vs_baseline: ``at_least`` (student >= baseline, point estimates) or
    ``significant_improvement`` (student > baseline with McNemar p < alpha; fails without a paired
    baseline). Passes whatever the numbers when ``require_beats_baseline`` is off. Carries the
    paired figures (McNemar p, discordant counts b and c, difference) when there is a pairing."""
    significant = gates.baseline_comparison == "significant_improvement"
    if significant:
        beats = paired is not None and beats_significantly(paired, gates.alpha)
    else:
        beats = student.value >= baseline_accuracy
    gate: dict[str, Any] = {"passed": (not gates.require_beats_baseline) or beats, "value": round(student.value, 6),
                            "threshold": round(baseline_accuracy, 6), "op": ">" if significant else ">=",
                            "comparison": gates.baseline_comparison, "alpha": gates.alpha}
    if paired is not None:
        figures = paired.as_dict("student", "baseline")
        gate |= {k: figures[k] for k in ("mcnemar_p", "student_only", "baseline_only")}
        gate["paired_difference"] = figures["difference"]
    return gate


def hard_gates(student: Accuracy, baseline_accuracy: float, paired: PairedComparison | None, win: WinRate,
               threshold: float, gates: EvalGates) -> dict[str, dict[str, Any]]:
    return {
        "test_exec_accuracy_vs_baseline": baseline_gate(student, baseline_accuracy, paired, gates),
        "online_win_rate": {"passed": win.rate >= threshold, "value": round(win.rate, 6),
                            "threshold": threshold, "op": ">="},
    }


def significance_clause(gate: dict[str, Any]) -> str:
    """What a hard gate asks beyond ``op threshold``: `` with McNemar p < 0.05`` or nothing."""
    return f" with McNemar p < {gate['alpha']:g}" if gate.get("comparison") == "significant_improvement" else ""


def paired_from(summary: dict[str, Any]) -> PairedComparison | None:
    """The student-vs-baseline table of an evaluation summary, or None when not paired."""
    paired = summary["paired_comparison"]
    if not paired["applicable"]:
        return None
    return PairedComparison(*(paired[k] for k in ("both_correct", "student_only", "baseline_only",
                                                  "neither_correct")))


def baseline_name(kind: str) -> str:
    """``the ungated baseline``, ``the baseline run r1``, ``the fixed baseline``."""
    return f"the baseline run {kind.removeprefix('run:')}" if kind.startswith("run:") else f"the {kind} baseline"


def format_p(p: float) -> str:
    """A p-value with three significant figures (0.00391, 0.0496, 1), so one just under a 0.05
    alpha never prints as 0.05."""
    return f"{p:.3g}"


def paired_verdict(paired: PairedComparison | None, alpha: float, kind: str, reason: str | None = None) -> str:
    """One plain sentence on whether the gated student beats the baseline, with McNemar's p."""
    baseline = baseline_name(kind)
    if paired is None:
        return f"the McNemar test is not applicable to {baseline}: {reason}"
    p = f"McNemar p = {format_p(paired.mcnemar_p)}"
    if beats_significantly(paired, alpha):
        return f"the gated student beats {baseline} ({p})"
    if paired.second_only > paired.first_only and paired.mcnemar_p < alpha:
        return f"{baseline} beats the gated student ({p})"
    return f"the gated student does not significantly beat {baseline} ({p})"


def assemble(frozen: FrozenRun, summary: dict[str, Any], timing: dict[str, Any],
             previous: dict[str, Any] | None, gate_paths: dict[str, Any],
             calibration: dict[str, Any] | None = None, label_cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full report: the evaluation summary, the run's identity, hard-gate verdicts, timing,
    the quality report's labeled / gold-free paths, its shadow calibration and what the kept labels
    cost (empty: none)."""
    student = Accuracy(summary["student"]["correct"], summary["student"]["n"])
    win = WinRate(*(summary["online_win_rate"][k] for k in ("wins", "losses", "ties")))  # judge-decided if set
    threshold = win_rate_threshold(frozen.gates.eval, win.n, previous)
    paired = paired_from(summary)
    gates = hard_gates(student, exact_accuracy(summary["baseline"]), paired, win, threshold, frozen.gates.eval)
    verdict = paired_verdict(paired, frozen.gates.eval.alpha, summary["baseline"]["kind"],
                             summary["paired_comparison"].get("reason"))
    return {**summary, "paired_comparison": {**summary["paired_comparison"], "verdict": verdict},
            "run_id": frozen.run_id, "gates_hash": frozen.gates_hash,
            "parent_run_id": frozen.config.parent_run_id, "hard_gates": gates, "timing": timing,
            "accepted": all(g["passed"] for g in gates.values()), "gate_paths": gate_paths,
            "gold_free_calibration": calibration or {}, "label_cost": label_cost or {}}


def plot_bars(report: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """(value, ci low, ci high) per model for the accuracy plot; a fixed baseline has no interval."""
    bars = {}
    for label, key in (("student", "student"), (f"baseline ({report['baseline']['kind']})", "baseline"),
                       ("teacher", "teacher")):
        acc = report[key]
        bars[label] = (acc["accuracy"], acc.get("ci95_low", acc["accuracy"]), acc.get("ci95_high", acc["accuracy"]))
    return bars


def markdown(report: dict[str, Any]) -> str:
    s, b, t, w = report["student"], report["baseline"], report["teacher"], report["online_win_rate"]
    lines = [
        f"### Eval on `{report['eval_split']}` ({s['n']} questions)", "",
        "| model | test_exec_accuracy | 95 % CI |", "|---|---|---|",
        f"| student ({report['trainer']}) | {s['accuracy']:.3f} | [{s['ci95_low']:.3f}, {s['ci95_high']:.3f}] |",
        f"| baseline ({b['kind']}) | {b['accuracy']:.3f} | "
        + (f"[{b['ci95_low']:.3f}, {b['ci95_high']:.3f}] |" if "ci95_low" in b else "- |"),
        f"| teacher | {t['accuracy']:.3f} | [{t['ci95_low']:.3f}, {t['ci95_high']:.3f}] |", "",
        *paired_markdown(report["paired_comparison"], b["kind"]), "",
        f"online_win_rate {w['online_win_rate']:.3f} (Wilson lower bound {w['online_win_rate_lower_bound']:.3f}; "
        f"wins {w['wins']}, losses {w['losses']}, ties {w['ties']})", "",
        "| hard gate | value | op | threshold | verdict |", "|---|---|---|---|---|",
    ]
    for name, gate in report["hard_gates"].items():
        lines.append(f"| {name} | {gate['value']:.4f} | {gate['op']} | "
                     f"{gate['threshold']:.4f}{significance_clause(gate)} | {'PASS' if gate['passed'] else 'FAIL'} |")
    lines += ["", "### Gates by path (labeled: gold match; gold_free: self-consistency)", "",
              paths_table(report["gate_paths"])]
    lines += gold_free_markdown(report.get("gold_free_precision"), report.get("gold_free_calibration") or {})
    if cost := cost_line(report.get("label_cost") or {}):
        lines += ["", cost]
    return "\n".join(lines + ["", *timing_markdown(report["timing"])])


def gold_free_markdown(precision: dict[str, Any] | None, calibration: dict[str, Any]) -> list[str]:
    """How right the labels made without gold are: against withheld gold where the run withheld
    some (overall and per label source), and the shadow calibration's estimate from the labeled samples."""
    lines = []
    if precision:
        lines += ["", f"gold-free precision against withheld gold: {precision['accuracy']:.3f} "
                  f"[{precision['ci95_low']:.3f}, {precision['ci95_high']:.3f}] "
                  f"({precision['correct']} of {precision['n']} kept gold-free samples)"]
        lines += [f"- label_source {source}: {acc['accuracy']:.3f} [{acc['ci95_low']:.3f}, {acc['ci95_high']:.3f}] "
                  f"({acc['correct']} of {acc['n']})" for source, acc in precision.get("by_label_source", {}).items()]
    if calibration.get("precision") is not None:
        lines += ["", f"shadow calibration (labeled samples, gold hidden from the gold-free gates): precision "
                  f"{calibration['precision']:.3f} [{calibration['precision_lower']:.3f}, "
                  f"{calibration['precision_upper']:.3f}] on the {calibration['kept']} of {calibration['samples']} "
                  f"samples it would keep; recall {figure(calibration['recall'], '.3f')}"]
        lines += [f"- label_source {source}: {m['precision']:.3f} [{m['precision_lower']:.3f}, "
                  f"{m['precision_upper']:.3f}] ({m['correct']} of {m['kept']})"
                  for source, m in calibration.get("by_label_source", {}).items()]
    return lines


def paired_markdown(paired: dict[str, Any], kind: str) -> list[str]:
    """Student minus baseline on the same questions, its interval, McNemar's b, c and p, and the verdict."""
    verdict = f"{paired['verdict'][0].upper()}{paired['verdict'][1:]}."
    if not paired["applicable"]:
        return [verdict]
    return [f"Paired on the same {paired['n']} questions: student \u2212 baseline ({kind}) = "
            f"{paired['difference']:+.3f}, 95 % CI [{paired['ci95_low']:+.3f}, {paired['ci95_high']:+.3f}] "
            f"(Newcombe method 10); exact McNemar: b = {paired['student_only']} (only the student right), "
            f"c = {paired['baseline_only']} (only the baseline right), p = {format_p(paired['mcnemar_p'])}.", "",
            f"**{verdict}**"]


def figure(value: float | None, spec: str = "") -> str:
    """A number for the markdown, or an en dash where it could not be measured (null)."""
    return "\u2013" if value is None else format(value, spec)


def teacher_throughput(timing: dict[str, Any]) -> str:
    """``teacher_tokens_per_sec`` with what it covers: the fresh calls only (missing when every
    answer came from the cache), the cached share, and the cold run's figure when some was cached,
    e.g. ``teacher_tokens_per_sec \u2013 (100 % cached; cold run 812.4)``."""
    value, share, cold = (timing.get(k) for k in ("teacher_tokens_per_sec", "teacher_cached_share",
                                                     "teacher_tokens_per_sec_cold"))
    notes = []
    if share:
        notes += (["fresh calls only"] if value is not None else []) + [f"{share * 100:.3g} % cached"]
    if cold is not None:
        notes.append(f"cold run {cold}")
    return f"teacher_tokens_per_sec {figure(value)}" + (f" ({'; '.join(notes)})" if notes else "")


def timing_markdown(timing: dict[str, Any]) -> list[str]:
    """The timing report's lines: the real wall clock and what it spans, the throughput figures
    and the per-stage table (``wall_s``: the asset's body; ``step_s``: its whole Dagster step)."""
    spans = timing["wall_clock_spans"]
    lines = [f"pipeline_kept_samples_per_hour {figure(timing['pipeline_kept_samples_per_hour'], ',.0f')} "
             f"= kept / data_wall_s {figure(timing['data_wall_s'])} s ({spans['data_wall_s']}); "
             f"pipeline_wall_s {figure(timing['pipeline_wall_s'])} s ({spans['pipeline_wall_s']}). "
             f"Wall clock {spans['rule']}.", "",
             f"{teacher_throughput(timing)}, train_tokens_per_sec {figure(timing['train_tokens_per_sec'])}", "",
             "| stage | wall_s | step_s | row p50 ms | row p90 ms | row p95 ms |", "|---|---|---|---|---|---|"]
    for stage, values in timing["stages"].items():
        cells = [values.get(k, "-") for k in ("wall_s", "step_s", "row_p50_ms", "row_p90_ms", "row_p95_ms")]
        lines.append(f"| {stage} | " + " | ".join(str(c) for c in cells) + " |")
    return lines
