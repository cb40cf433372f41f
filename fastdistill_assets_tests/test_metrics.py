"""Evaluation numbers against hand-checked values."""

import polars as pl
import pytest

from fastdistill_assets.config.models import EvalGates
from fastdistill_assets.evaluation.metrics import (
    Accuracy,
    EvalItem,
    PairedComparison,
    WinRate,
    exec_correct,
    mcnemar_exact_p,
    newcombe_paired_interval,
    paired_comparison,
    parity_lower_bound,
    wilson_interval,
    win_rate,
)
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets_tests.db_fixtures import make_sqlite


@pytest.mark.parametrize("k, n, low, high", [
    (8, 10, 0.4902, 0.9433),     # textbook Wilson 95 % interval
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
])
def test_wilson_interval(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_eval_numbers_on_a_hand_checked_fixture(tmp_path):
    db = str(make_sqlite(tmp_path / "db.sqlite"))
    items = [EvalItem(q, "s", "[]", db, "sqlite", gold) for q, gold in [
        ("porto players", "SELECT name FROM player WHERE club = 'Porto'"),
        ("top goals", "SELECT MAX(goals) FROM player"),
        ("how many", "SELECT COUNT(name) FROM player"),
        ("avg rating", "SELECT AVG(rating) FROM player"),
    ]]
    student = ["```sql\nSELECT name FROM player WHERE club = 'Porto';\n```",  # right (after cleaning)
               "SELECT MAX(goals) FROM player",                               # right
               "SELECT COUNT(*) FROM player",                                  # right: same result
               "SELECT AVG(goals) FROM player"]                                # wrong
    teacher = ["SELECT name FROM player", "SELECT MAX(goals) FROM player", "SELECT nope FROM player", None]
    with Executor() as executor:
        s_ok, t_ok = exec_correct(student, items, executor), exec_correct(teacher, items, executor)
    assert s_ok == [True, True, True, False] and t_ok == [False, True, False, False]
    acc = Accuracy(sum(s_ok), len(s_ok)).as_dict()
    assert acc["accuracy"] == 0.75 and (acc["ci95_low"], acc["ci95_high"]) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    win = win_rate(s_ok, t_ok)
    assert (win.wins, win.losses, win.ties) == (2, 0, 2)
    assert win.rate == 0.75  # (2 wins + 2 ties / 2) / 4
    assert win_rate(s_ok, t_ok, [None, True, None, False]).as_dict()["wins"] == 3


def test_parity_lower_bound_shrinks_towards_half():
    assert parity_lower_bound(100) == pytest.approx(0.4038, abs=1e-4)
    assert parity_lower_bound(10_000) > parity_lower_bound(100)


def test_equal_accuracy_passes_the_baseline_gate():
    from fastdistill_assets.evaluation.report import exact_accuracy, hard_gates

    baseline = Accuracy(101, 120).as_dict()  # accuracy rounds up to 0.841667
    gates = hard_gates(Accuracy(101, 120), exact_accuracy(baseline), None, WinRate(1, 1, 10), 0.3, EvalGates())
    assert gates["test_exec_accuracy_vs_baseline"]["passed"]
    assert not hard_gates(Accuracy(100, 120), exact_accuracy(baseline), None, WinRate(1, 1, 10), 0.3,
                          EvalGates())["test_exec_accuracy_vs_baseline"]["passed"]


# -- student vs baseline on the same questions ----------------------------------------------------

@pytest.mark.parametrize("b, c, p", [
    (10, 2, 0.0386),   # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096 = 0.03857
    (9, 3, 0.1460),    # 2 * (1 + 12 + 66 + 220) / 4096 = 2 * 299 / 4096
    (2, 10, 0.0386),   # two-sided: symmetric in b and c
    (6, 16, 0.0525),   # Fagerland, Lydersen & Laake (2014), Cavo et al. table: exact conditional p = 0.052
    (5, 0, 0.0625),    # 2 / 2^5
    (3, 3, 1.0),       # 2 * P(X <= 3) > 1: capped
    (0, 0, 1.0),       # no discordant question: no evidence either way
])
def test_mcnemar_exact_p_against_hand_computed_binomial_tails(b, c, p):
    assert mcnemar_exact_p(b, c) == pytest.approx(p, abs=1e-4)


def test_newcombe_paired_interval_against_published_values():
    """Contingency-table textbook (Fagerland, Lydersen & Laake) examples, Newcombe square-and-add:
    Cavo et al. (a, b, c, d) = (59, 6, 16, 80): -0.0621 [-0.1186, -0.0046]; Bentur et al.
    (1, 1, 7, 12): -0.2857 [-0.5069, -0.0256]."""
    assert newcombe_paired_interval(59, 6, 16, 80) == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    assert newcombe_paired_interval(1, 1, 7, 12) == pytest.approx((-0.5069, -0.0256), abs=1e-4)
    assert PairedComparison(59, 6, 16, 80).difference == pytest.approx(-0.0621, abs=1e-4)
    low, high = newcombe_paired_interval(0, 0, 0, 10)  # both always wrong: difference 0, interval around it
    assert low < 0 < high and (low, high) == pytest.approx((-high, high))


# 40 questions: both right on 20, only the student on b, only the baseline on c, neither on the rest.
def _lists(b: int, c: int) -> tuple[list[bool], list[bool]]:
    student = [True] * 20 + [True] * b + [False] * c + [False] * (20 - b - c)
    baseline = [True] * 20 + [False] * b + [True] * c + [False] * (20 - b - c)
    return student, baseline


def test_paired_comparison_counts_the_table():
    student, baseline = _lists(10, 2)
    paired = paired_comparison(student, baseline)
    assert paired == PairedComparison(both=20, first_only=10, second_only=2, neither=8)
    assert paired.difference == pytest.approx(sum(student) / 40 - sum(baseline) / 40) == 0.2
    figures = paired.as_dict("student", "baseline")
    assert (figures["student_only"], figures["baseline_only"]) == (10, 2)
    assert figures["mcnemar_p"] == pytest.approx(0.0385742, abs=1e-7)  # 158 / 4096, 6 significant digits
    assert PairedComparison(445, 104, 11, 64).as_dict("s", "b")["mcnemar_p"] == pytest.approx(3.82168e-20, rel=1e-5)
    with pytest.raises(ValueError):
        paired_comparison(student, baseline[:-1])


@pytest.mark.parametrize("b, c, passed", [
    (10, 2, True),    # p = 0.0386 < 0.05 and the student is better
    (9, 3, False),    # p = 0.146 >= 0.05: better on points, not significantly
    (2, 10, False),   # p = 0.0386 but the baseline is the better one
    (0, 0, False),    # equal: p = 1
])
def test_significant_improvement_gate_needs_mcnemar_p_below_alpha(b, c, passed):
    from fastdistill_assets.evaluation.report import baseline_gate

    student, baseline = _lists(b, c)
    paired = paired_comparison(student, baseline)
    accuracy = Accuracy(sum(student), len(student))
    strict = EvalGates(baseline_comparison="significant_improvement", alpha=0.05)
    gate = baseline_gate(accuracy, sum(baseline) / len(baseline), paired, strict)
    assert gate["passed"] is passed
    assert (gate["student_only"], gate["baseline_only"], gate["op"]) == (b, c, ">")
    assert gate["mcnemar_p"] == pytest.approx(mcnemar_exact_p(b, c), abs=1e-6)
    # the same numbers under at_least: student >= baseline on points is enough
    assert baseline_gate(accuracy, sum(baseline) / len(baseline), paired, EvalGates())["passed"] is (b >= c)
    # alpha is the configured one: at 0.01 even b = 10, c = 2 (p = 0.0386) is not enough
    stricter = strict.model_copy(update={"alpha": 0.01})
    assert baseline_gate(accuracy, sum(baseline) / len(baseline), paired, stricter)["passed"] is False


def test_significant_improvement_without_a_pairing_fails_and_needs_a_paired_baseline_kind():
    from pydantic import ValidationError

    from fastdistill_assets.evaluation.report import baseline_gate

    strict = EvalGates(baseline_comparison="significant_improvement", baseline={"kind": "run", "run_id": "r1"})
    assert not baseline_gate(Accuracy(40, 40), 0.5, None, strict)["passed"]  # the run answered other questions
    with pytest.raises(ValidationError, match="significant_improvement needs per-question"):
        EvalGates(baseline_comparison="significant_improvement", baseline={"kind": "fixed", "value": 0.5})


@pytest.mark.parametrize("b, c, sentence", [
    (10, 2, "the gated student beats the ungated baseline (McNemar p = 0.0386)"),
    (9, 3, "the gated student does not significantly beat the ungated baseline (McNemar p = 0.146)"),
    (2, 10, "the ungated baseline beats the gated student (McNemar p = 0.0386)"),
])
def test_paired_verdict_is_one_plain_sentence(b, c, sentence):
    from fastdistill_assets.evaluation.report import paired_verdict

    assert paired_verdict(paired_comparison(*_lists(b, c)), 0.05, "ungated") == sentence
    assert paired_verdict(None, 0.05, "fixed", "it is one number") == \
        "the McNemar test is not applicable to the fixed baseline: it is one number"


@pytest.mark.parametrize("k, n", [(0, 12), (12, 12), (0, 1)])
def test_accuracy_plot_handles_extreme_proportions(k, n):
    from fastdistill_assets.evaluation.plots import accuracy_plot

    acc = Accuracy(k, n)
    assert accuracy_plot({"student": (acc.value, *acc.ci95)})[:4] == b"\x89PNG"


def test_eval_uses_the_runs_gold_config(tmp_path):
    from fastdistill_assets.config.models import GoldGates

    db = str(make_sqlite(tmp_path / "db.sqlite"))
    items = [EvalItem("avg rating", "s", "[]", db, "sqlite", "SELECT AVG(rating) FROM player")]  # 1.9625
    with Executor() as executor:
        assert exec_correct(["SELECT 1.9626"], items, executor) == [False]
        assert exec_correct(["SELECT 1.9626"], items, executor, GoldGates(float_tolerance=1e-3)) == [True]


def test_eval_prompt_is_the_training_prompt():
    """Teacher and student are asked exactly what the student was trained on: evidence and dialect included."""
    from fastdistill_assets.config.models import RunConfig
    from fastdistill_assets.teacher.candidates import build_requests

    row = {"sample_id": "s", "split": "test", "db_id": "shop", "question": "Which region sells Cocoa?",
           "evidence": "Cocoa is a product.", "schema": "CREATE TABLE sales (region TEXT, product TEXT)",
           "sample_rows": '{"sales": [["North", "Tea"]]}', "gold_sql": "SELECT 1", "db_path": "x.duckdb",
           "dialect": "duckdb", "decode_profile": "{}"}
    [request], _ = build_requests(pl.DataFrame([row]), RunConfig(teacher={"splits": ["test"]}, decode={"num_generations": 1}))
    item = EvalItem(row["question"], row["schema"], row["sample_rows"], row["db_path"], row["dialect"],
                    row["gold_sql"], row["evidence"])
    assert item.messages() == request.messages
    assert "### Evidence\nCocoa is a product." in item.messages()[1]["content"]
    assert "one DuckDB query" in item.messages()[0]["content"]


# -- the timing report ---------------------------------------------------------------------------

def _spans(dagster_run_id: str, **stages: tuple[float, float]) -> dict:
    from fastdistill_assets.evaluation.pipeline_metrics import StepSpan

    return {stage: StepSpan(dagster_run_id, start, end) for stage, (start, end) in stages.items()}


ONE_RUN = _spans("a", raw=(100.0, 101.0), canonical=(101.5, 102.0), teacher_candidates=(102.2, 150.0),
                 filtered=(150.5, 160.0), distilled=(160.2, 161.0))


def test_wall_clock_is_first_step_start_to_last_step_end_per_dagster_run():
    from fastdistill_assets.evaluation.pipeline_metrics import wall_clock_s

    assert wall_clock_s(ONE_RUN.values()) == pytest.approx(61.0)  # 161.0 - 100.0, gaps between steps count
    two_runs = {**_spans("a", raw=(0.0, 4.0), teacher_candidates=(5.0, 10.0)),
                **_spans("b", filtered=(100.0, 107.0), distilled=(108.0, 110.0))}
    assert wall_clock_s(two_runs.values()) == pytest.approx(20.0)  # 10 + 10: the 90 s between runs do not count
    overlapping = _spans("a", raw=(0.0, 10.0)) | _spans("b", filtered=(5.0, 12.0))
    assert wall_clock_s(overlapping.values()) == pytest.approx(12.0)  # merged, not 10 + 7
    assert wall_clock_s([]) is None


def test_timing_report_kept_per_hour_from_the_real_wall_clock():
    from fastdistill_assets.evaluation.pipeline_metrics import StepSpan, timing_report

    meta = {"raw": {"timing_wall_s": 0.5}, "teacher_candidates": {"timing_wall_s": 40.0,
                                                                  "teacher_tokens_per_sec": 812.4,
                                                                  "teacher_cached_share": 0.0},
            "distilled": {"timing_wall_s": 0.3, "kept": 1000}, "student_model": {"train_tokens_per_sec": 5000.0}}
    spans = {**ONE_RUN, "student_model": StepSpan("a", 161.5, 170.0), "eval_report": StepSpan("a", 170.2, 190.0)}
    report = timing_report(meta, spans, eval_wall_s=18.25)
    assert report["data_wall_s"] == 61.0 and report["pipeline_wall_s"] == 90.0  # 190 - 100
    assert report["pipeline_kept_samples_per_hour"] == 59016.4  # 1000 / 61 s * 3600
    assert report["data_dagster_runs"] == 1
    assert report["stages"]["teacher_candidates"] == {"wall_s": 40.0, "step_s": 47.8}
    assert report["stages"]["eval_report"] == {"wall_s": 18.25, "step_s": 19.8}
    assert (report["teacher_tokens_per_sec"], report["teacher_cached_share"],
            report["teacher_tokens_per_sec_cold"], report["train_tokens_per_sec"]) == (812.4, 0.0, None, 5000.0)


def test_timing_report_of_a_fully_cached_rerun_shows_no_teacher_throughput():
    from fastdistill_assets.evaluation.pipeline_metrics import timing_report
    from fastdistill_assets.evaluation.report import teacher_throughput, timing_markdown

    meta = {"teacher_candidates": {"teacher_cached_share": 1.0, "teacher_tokens_per_sec_cold": 812.4}}
    report = timing_report(meta, {}, eval_wall_s=1.0)
    assert report["teacher_tokens_per_sec"] is None and report["teacher_tokens_per_sec_cold"] == 812.4
    assert report["pipeline_kept_samples_per_hour"] is None and report["data_wall_s"] is None
    assert teacher_throughput(report) == "teacher_tokens_per_sec \u2013 (100 % cached; cold run 812.4)"
    lines = timing_markdown(report)
    assert lines[0].startswith("pipeline_kept_samples_per_hour \u2013 = kept / data_wall_s \u2013 s (raw step start")
    assert lines[2] == "teacher_tokens_per_sec \u2013 (100 % cached; cold run 812.4), train_tokens_per_sec \u2013"


@pytest.mark.parametrize("teacher, text", [
    ({"teacher_tokens_per_sec": 812.4, "teacher_cached_share": 0.0}, "teacher_tokens_per_sec 812.4"),
    ({"teacher_tokens_per_sec": 640.2, "teacher_cached_share": 0.4, "teacher_tokens_per_sec_cold": 812.4},
     "teacher_tokens_per_sec 640.2 (fresh calls only; 40 % cached; cold run 812.4)"),
    ({}, "teacher_tokens_per_sec \u2013"),  # metadata from before the cache-aware figures
])
def test_teacher_throughput_says_what_it_covers(teacher, text):
    from fastdistill_assets.evaluation.report import teacher_throughput

    assert teacher_throughput(teacher) == text
