"""Evaluation numbers against hand-checked values."""

import polars as pl
import pytest

from fastdistill_assets.evaluation.metrics import (Accuracy, EvalItem, exec_correct, parity_lower_bound, win_rate,
                                                   wilson_interval)
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
    from fastdistill_assets.config import EvalGates
    from fastdistill_assets.evaluation.metrics import WinRate
    from fastdistill_assets.evaluation.report import exact_accuracy, hard_gates

    baseline = Accuracy(101, 120).as_dict()  # accuracy rounds up to 0.841667
    gates = hard_gates(Accuracy(101, 120), exact_accuracy(baseline), WinRate(1, 1, 10), 0.3, EvalGates())
    assert gates["test_exec_accuracy_vs_baseline"]["passed"]
    assert not hard_gates(Accuracy(100, 120), exact_accuracy(baseline), WinRate(1, 1, 10), 0.3,
                          EvalGates())["test_exec_accuracy_vs_baseline"]["passed"]


@pytest.mark.parametrize("k, n", [(0, 12), (12, 12), (0, 1)])
def test_accuracy_plot_handles_extreme_proportions(k, n):
    from fastdistill_assets.evaluation.plots import accuracy_plot

    acc = Accuracy(k, n)
    assert accuracy_plot({"student": (acc.value, *acc.ci95)})[:4] == b"\x89PNG"


def test_eval_uses_the_runs_gold_config(tmp_path):
    from fastdistill_assets.config import GoldGates

    db = str(make_sqlite(tmp_path / "db.sqlite"))
    items = [EvalItem("avg rating", "s", "[]", db, "sqlite", "SELECT AVG(rating) FROM player")]  # 1.9625
    with Executor() as executor:
        assert exec_correct(["SELECT 1.9626"], items, executor) == [False]
        assert exec_correct(["SELECT 1.9626"], items, executor, GoldGates(float_tolerance=1e-3)) == [True]


def test_eval_prompt_is_the_training_prompt():
    """Teacher and student are asked exactly what the student was trained on: evidence and dialect included."""
    from fastdistill_assets.candidates import build_requests
    from fastdistill_assets.config import RunConfig

    row = {"sample_id": "s", "split": "test", "db_id": "shop", "question": "Which region sells Cocoa?",
           "evidence": "Cocoa is a product.", "schema": "CREATE TABLE sales (region TEXT, product TEXT)",
           "sample_rows": '{"sales": [["North", "Tea"]]}', "gold_sql": "SELECT 1", "db_path": "x.duckdb",
           "dialect": "duckdb", "decode_profile": "{}"}
    [request], _ = build_requests(pl.DataFrame([row]), RunConfig(teacher={"splits": ["test"]}))
    item = EvalItem(row["question"], row["schema"], row["sample_rows"], row["db_path"], row["dialect"],
                    row["gold_sql"], row["evidence"])
    assert item.messages() == request.messages
    assert "### Evidence\nCocoa is a product." in item.messages()[1]["content"]
    assert "one DuckDB query" in item.messages()[0]["content"]
