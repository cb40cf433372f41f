"""Gold-free labels a user can trust: degenerate majorities, question numbers, shadow calibration,
and escalation to a stronger teacher (pure functions, then real materializations against real
OpenAI-compatible servers on 127.0.0.1, one per teacher)."""

import json
import os
import shutil
import signal
import subprocess
from decimal import Decimal

import polars as pl
import pytest
from sqlglot import parse_one

from fastdistill_assets.config.models import (
    CheckThreshold,
    ConsistencyGates,
    EscalateConfig,
    GatesConfig,
    RecipeConfig,
    TeacherConfig,
)
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.defs.checks import evaluate_threshold, reject_counts
from fastdistill_assets.gates.consistency import (
    DEGENERATE,
    MINORITY,
    TOO_FEW,
    is_degenerate,
    sample_verdicts,
)
from fastdistill_assets.gates.escalation import (
    UNCONFIRMED,
    decide_escalated,
    unsettled_samples,
)
from fastdistill_assets.gates.grounding import (
    missing_question_numbers,
    question_numbers,
)
from fastdistill_assets.gates.label_cost import (
    add_counts,
    cost_line,
    label_cost,
    token_counts,
)
from fastdistill_assets.gates.shadow import calibration
from fastdistill_assets.gates.stage import after_their_samples, gate_chunk
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.provider_config import Prices
from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher
from fastdistill_assets_tests.conftest import (
    REPO_CONFIGS,
    materialize,
    materialize_command,
    teacher_gateway,
    wait_until,
)
from fastdistill_assets_tests.db_fixtures import make_sqlite
from fastdistill_assets_tests.wikisql_fixture import GOOD, write_wikisql


@pytest.mark.parametrize("rows, degenerate", [
    ([], True),                                   # no rows
    ([(None,)], True),                            # a lone NULL (MAX over nothing)
    ([(None, None), (None, None)], True),         # every value NULL
    ([(0,)], True),                               # COUNT(*) of nothing
    ([(0.0,)], True),
    ([(0, None)], True),                          # one row of only 0 / NULL
    ([(Decimal("0.00"),)], True),                 # DuckDB's SUM over nothing of a DECIMAL column
    ([(0,), (3,)], False),                        # a legitimate 0 among other rows
    ([(0,), (0,)], False),                        # two rows are a result, whatever they hold
    ([(3,)], False),
    ([("0",)], False),                            # the text '0' is a value
    ([(None, "Porto")], False),
])
def test_degenerate_results(rows, degenerate):
    assert is_degenerate(rows) is degenerate


KEEP_DEGENERATE = ConsistencyGates(degenerate_result="keep")


@pytest.mark.parametrize("signatures, degenerate, config, reasons", [
    (["e", "e", "x"], [True, True, False], ConsistencyGates(), [DEGENERATE] * 3),      # consensus on nothing
    (["e", "e", "x"], [True, True, False], KEEP_DEGENERATE, [None, None, MINORITY]),   # the plain vote
    (["r", "r", "e"], [False, False, True], ConsistencyGates(), [None, None, MINORITY]),  # a degenerate minority
    (["e", None], [True, None], ConsistencyGates(), [TOO_FEW, None]),                  # too few comes first
])
def test_a_degenerate_majority_is_no_evidence(signatures, degenerate, config, reasons):
    assert sample_verdicts(signatures, config, degenerate)[1] == reasons


@pytest.mark.parametrize("question, numbers", [
    ("Give the city where the opening year is 1931.", ["1931"]),
    ("Which airport has runways smaller than 6 and passengers over 38.5?", ["6", "38.5"]),
    ("How many towns have more than 1,000 people?", ["1000"]),
    ("What is the time for the 1500m event?", []),                # part of a word
    ("Which model is the Astra 749?", ["749"]),
    ("How many entries are there?", []),
    ("Which cities have more than 1 million people and 50% of them under 30?", ["30"]),  # written otherwise
    ("Towns with 20 percent growth or 3k people?", []),
])
def test_question_numbers(question, numbers):
    assert question_numbers(question) == numbers


@pytest.mark.parametrize("question, sql, missing", [
    ("Give the city where the opening year is 1931.", "SELECT city FROM t", ["1931"]),
    ("Give the city where the opening year is 1931.", "SELECT city FROM t WHERE year = 1931", []),
    ("Passengers over 38.0?", "SELECT p FROM t WHERE p > 38", []),          # the same number
    ("Which model is the Astra 749?", "SELECT m FROM t WHERE m = 'Astra 749'", []),   # inside a string
    ("The 3 largest cities over 1,000?", "SELECT c FROM t WHERE n > 1000 ORDER BY n DESC LIMIT 3", []),
    ("Salary over 72457 for Quinn?", "SELECT s FROM t WHERE s > 101833", ["72457"]),  # a changed value
])
def test_missing_question_numbers(question, sql, missing):
    assert missing_question_numbers(question, parse_one(sql, read="sqlite")) == missing


def _frame(rows: list[tuple]) -> pl.DataFrame:
    """Rows (sample_id, gold_sql, gold_match, shadow_kept, shadow_reason, label_source[, reject_reason])."""
    return pl.DataFrame([row if len(row) == 7 else (*row, None) for row in rows],
                        schema={"sample_id": pl.String, "gold_sql": pl.String, "gold_match": pl.Boolean,
                                "shadow_kept": pl.Boolean, "shadow_reason": pl.String, "label_source": pl.String,
                                "reject_reason": pl.String}, orient="row")


def test_calibration_figures_by_hand():
    """S1 kept and right, S2 kept and wrong, S3 right answer not kept, S4 nothing right, S5 right by
    its escalated answer; G1 has no gold; S6's gold fails."""
    frame = _frame([("S1", "g", True, True, None, "gold"), ("S1", "g", True, False, "not_selected", "gold"),
                    ("S2", "g", False, True, None, "gold"), ("S2", "g", True, False, "minority_result", "gold"),
                    ("S3", "g", True, False, "low_agreement", "gold"), ("S3", "g", False, False, "low_agreement", "gold"),
                    ("S4", "g", False, False, "exec_error", "gold"), ("G1", None, None, True, "no_majority", "teacher"),
                    ("S5", "g", False, False, "low_agreement", "gold"), ("S5", "g", True, True, None, "escalated"),
                    # S6's gold does not run: nothing to score its shadow verdict against, left out
                    ("S6", "g", None, True, None, "gold", "gold_unavailable")])
    got = calibration(frame)
    # Wilson 95 % for 1 of 2: centre 0.5, half-width 1.96 * sqrt(0.125 + 1.96^2 / 16) / (1 + 1.96^2 / 2)
    assert {k: got[k] for k in ("samples", "kept", "correct", "reachable", "precision", "recall")} == \
        {"samples": 5, "kept": 3, "correct": 2, "reachable": 4, "precision": pytest.approx(2 / 3, abs=1e-6),
         "recall": 0.5}
    # per label source: S1 and S2 by the first teacher (1 of 2 right), S5 escalated (right)
    teacher, escalated = got["by_label_source"]["teacher"], got["by_label_source"]["escalated"]
    assert (teacher["kept"], teacher["correct"], escalated["kept"], escalated["correct"]) == (2, 1, 1, 1)
    assert (teacher["precision_lower"], teacher["precision_upper"]) == pytest.approx((0.094531, 0.905469), abs=1e-6)
    assert got["shadow_reason_counts"] == {"low_agreement": 3, "exec_error": 1, "minority_result": 1,
                                           "not_selected": 1}   # labeled rows only: G1's is a real verdict
    assert calibration(frame.filter(pl.col("gold_sql").is_null())) is None   # no labeled sample: nothing measured


def test_the_precision_check_is_not_applicable_without_labeled_samples():
    threshold = CheckThreshold(metric="gold_free_precision_lower", op=">=", value=0.9, blocking=False)
    assert evaluate_threshold(threshold, None).metadata["applicable"].value is False
    failed = evaluate_threshold(threshold, 0.85, {"low_agreement": 7, "ungrounded_literal": 2})
    assert not failed.passed and failed.severity.value == "WARN"
    assert failed.metadata["reject_reason_counts"].value == {"low_agreement": 7, "ungrounded_literal": 2}
    assert "reject_reason_counts" not in evaluate_threshold(threshold, 0.95, {"low_agreement": 7}).metadata
    assert "the shadow calibration had nothing to measure on" in evaluate_threshold(threshold, None).description
    # what lies behind each figure: the shadow verdicts for the calibration's, the path's for a path metric
    report = {"calibration": {"shadow_reason_counts": {"low_agreement": 3}}, "reject_reason_counts": {"x": 1},
              "paths": {"gold_free": {"reject_reason_counts": {"no_majority": 2}}}}
    assert reject_counts(report, "gold_free_precision_lower") == {"low_agreement": 3}
    assert reject_counts(report, "gold_free_p_keep") == {"no_majority": 2}
    assert reject_counts(report, "p_keep") == {"x": 1}


GOLD = "SELECT name FROM player WHERE club = 'Porto'"


def _candidates(tmp_path, rows: list[tuple]) -> pl.DataFrame:
    path = tmp_path / "db.sqlite"
    db_path = str(path if path.exists() else make_sqlite(path))
    return pl.DataFrame([{
        "candidate_id": f"c{i}", "sample_id": sample, "generation_index": i, "raw_output": raw, "error": None,
        "db_path": db_path, "dialect": "sqlite", "gold_sql": gold, "question": question,
        "schema": "s", "messages": json.dumps([{"role": "user", "content": question}]), "prompt_hash": "p",
    } for i, (sample, gold, question, raw) in enumerate(rows)], schema_overrides={"error": pl.String, "gold_sql": pl.String})


def test_shadow_verdicts_give_labeled_samples_the_gold_free_verdict(tmp_path):
    """L1's majority matches its gold (shadow-kept, right); L2's two answers agree on a result
    that is not its gold (shadow-kept, wrong: the gold-free gate would have kept a wrong label);
    L3 leaves out the question's number (rejected on the gold-free path, labeled by gold anyway)."""
    rows = [("L1", GOLD, "Who plays for Porto?", GOLD), ("L1", GOLD, "Who plays for Porto?", GOLD),
            ("L1", GOLD, "Who plays for Porto?", "SELECT name FROM player"),
            ("L2", GOLD, "Who plays for Porto?", "SELECT name FROM player WHERE goals > 5"),
            ("L2", GOLD, "Who plays for Porto?", "SELECT name FROM player WHERE goals > 5"),
            ("L3", "SELECT name FROM player WHERE goals = 7", "Who scored 7 goals?", "SELECT name FROM player"),
            ("L3", "SELECT name FROM player WHERE goals = 7", "Who scored 7 goals?", "SELECT name FROM player")]
    frame, _ = gate_chunk(_candidates(tmp_path, rows), GatesConfig(), RecipeConfig(multi_decode_select=True), None,
                          TeacherConfig())
    assert frame["reject_reason"].to_list() == [None, "not_selected", "gold_mismatch", "gold_mismatch",
                                                "gold_mismatch", "gold_mismatch", "gold_mismatch"]
    assert frame["shadow_kept"].to_list() == [True, False, False, True, False, False, False]
    assert frame["shadow_reason"].to_list() == [None, "not_selected", MINORITY, None, "not_selected",
                                                "missing_question_number", "missing_question_number"]
    assert frame["missing_numbers"].to_list()[5:] == ["7", "7"]
    assert frame["label_source"].unique().to_list() == ["gold"]
    assert {k: calibration(frame)[k] for k in ("kept", "correct", "reachable")} == {"kept": 2, "correct": 1,
                                                                                   "reachable": 1}


def test_escalated_answers_pass_the_same_gates(tmp_path):
    """U1: the strong answer agrees with one first answer (kept); U2: it agrees with none
    (unconfirmed, unless trusted alone); U3: it is degenerate; U4: it names a club no one plays for."""
    first = _candidates(tmp_path, [
        ("U1", None, "Who plays for Porto?", GOLD), ("U1", None, "Who plays for Porto?", "SELECT name FROM player"),
        ("U2", None, "Who plays for Oslo?", "SELECT name FROM player"),
        ("U2", None, "Who plays for Oslo?", "SELECT club FROM player"),
        ("U3", None, "Who?", "SELECT name FROM player"), ("U4", None, "Who?", "SELECT name FROM player")])
    asked = _candidates(tmp_path, [
        ("U1", None, "Who plays for Porto?", GOLD),
        ("U2", None, "Who plays for Oslo?", "SELECT name FROM player WHERE club = 'Oslo'"),
        ("U3", None, "Who?", "SELECT name FROM player WHERE goals > 100"),
        ("U4", None, "Who?", "SELECT name FROM player WHERE club = 'Rome'")])
    gates = GatesConfig()
    gated_first, _ = gate_chunk(first, gates, RecipeConfig(multi_decode_select=True), None, TeacherConfig())
    assert unsettled_samples(gated_first, ["no_majority"]) == ["U1", "U2"]
    # a sample none of whose answers executed is unsettled too (as too few executed) where an escalated
    # answer can be kept without a first answer to confirm it
    failing = _candidates(tmp_path, [("U5", None, "Who?", "SELECT nme FROM player"),
                                     ("U5", None, "Who?", "SELECT nme FROM player")])
    gated_failing, _ = gate_chunk(failing, gates, RecipeConfig(multi_decode_select=True), None, TeacherConfig())
    assert unsettled_samples(gated_failing, ["too_few_executed"], unexecuted=True) == ["U5"]
    assert unsettled_samples(gated_failing, ["too_few_executed"]) == []
    assert unsettled_samples(gated_failing, ["no_majority"], unexecuted=True) == []
    from fastdistill_assets.gates.pipeline import gate_frame

    esc = gate_frame(asked, gates)
    verdicts = decide_escalated(esc, gated_first, gates, EscalateConfig(provider="embedded"))
    assert verdicts["reject_reason"].to_list() == [None, UNCONFIRMED, DEGENERATE, "ungrounded_literal"]
    trusted = decide_escalated(esc, gated_first, gates, EscalateConfig(provider="embedded", trust_single=True))
    assert trusted["reject_reason"].to_list() == [None, None, DEGENERATE, "ungrounded_literal"]
    twice = decide_escalated(esc, gated_first, gates, EscalateConfig(provider="embedded", min_confirmations=2))
    assert twice["reject_reason"].to_list()[:2] == [UNCONFIRMED, UNCONFIRMED]


def test_label_cost_by_hand():
    frame = pl.DataFrame({"label_source": ["gold", "teacher", "escalated", "escalated", "escalated"],
                          "reject_reason": [None, None, None, "unconfirmed_single", "calibration_only"],
                          "prompt_tokens": [100, 300, 1000, None, 400], "completion_tokens": [10, 30, 50, 0, 20],
                          "cached_tokens": [0, 200, 0, None, 0]})
    tokens = add_counts([token_counts(frame), token_counts(frame.head(1))])
    assert tokens == {"teacher": [500, 50, 200], "escalation": [1000, 50, 0], "calibration": [400, 20, 0]}
    # teacher 300 * 0.15 + 200 cached * 0.075 + 50 * 0.60 = 90 micro-dollars; escalation 1000 * 2.5 +
    # 50 * 10 = 3,000; calibration 400 * 2.5 + 20 * 10 = 1,200
    prices = {"teacher": Prices(0.15, 0.60, 0.075), "escalation": (2.5, 10.0), "calibration": (2.5, 10.0)}
    cost = label_cost(tokens, prices, kept_samples=3)
    assert cost["teacher_cost_usd"] == {"calibration": 0.0012, "escalation": 0.003, "teacher": 0.00009}
    assert cost["total_usd"] == 0.00429 and cost["cost_per_kept_sample_usd"] == 0.00143
    # without a cached price, cached input costs the full input price: 500 * 0.15 + 50 * 0.60 = 105
    assert label_cost(tokens, {**prices, "teacher": Prices(0.15, 0.60)}, 3)["teacher_cost_usd"]["teacher"] == 0.000105
    assert cost_line(cost) == ("teacher cost $0.0043 (calibration $0.0012, escalation $0.0030, teacher $0.0001) "
                               "for 3 kept samples: $0.001430 per kept sample")
    unpriced = label_cost(tokens, {**prices, "escalation": (None, None)}, kept_samples=3)
    assert unpriced["total_usd"] is None and unpriced["teacher_cost_usd"]["escalation"] is None
    assert cost_line(unpriced) is None   # unknown, not made up


def test_escalated_answers_train_neither_the_ungated_baseline_nor_a_rejected_side():
    from fastdistill_assets.gates.sft_export import preference_pairs
    from fastdistill_assets.training.ungated import ungated_training_set

    frame = pl.DataFrame({
        "sample_id": ["A", "A", "B", "B"], "candidate_id": ["a0", "a1", "b0", "b5"], "generation_index": [0, 5, 0, 5],
        "error": [None, None, "server_error", None], "label_source": ["gold", "escalated", "teacher", "escalated"],
        "kept": [True, False, False, True], "reject_reason": [None, "calibration_only", "teacher_error", None],
        "judge_score": [1.0, 1.0, None, 0.5], "gold_match": [True, True, None, None],
        "cleaned_sql": ["SELECT 1 x", "SELECT 2 y", None, "SELECT 3 z"], "raw_output": ["r0", "r1", None, "r3"],
        "messages": ["[]"] * 4}, schema_overrides={"error": pl.String, "gold_match": pl.Boolean})
    # the baseline learns the first teacher's first answer; B's only one errored, so B has none
    assert ungated_training_set(frame)["candidate_id"].to_list() == ["a0"]
    # A's calibration-only answer is no rejected side; B's kept escalated label vs its failed first answer
    assert [(p["sample_id"], p["rejected_reason"]) for p in preference_pairs(frame)] == [("B", "teacher_error")]


def test_escalated_rows_follow_their_sample():
    frame = pl.DataFrame({"sample_id": ["A", "A", "B", "C"], "n": [1, 2, 3, 4]})
    extra = pl.DataFrame({"sample_id": ["C", "A", "A"], "n": [5, 6, 7]})
    assert after_their_samples(frame, extra).rows() == [("A", 1), ("A", 2), ("A", 6), ("A", 7), ("B", 3), ("C", 4),
                                                        ("C", 5)]


ESCALATION_RUN = {"dataset": {"limit_per_split": 40, "splits": ["train"], "withhold_gold": {"share": 1.0}},
                  "decode": {"name": "sampled", "temperature": 0.4, "num_generations": 5},
                  "recipe": {"multi_decode_select": True}, "eval_split": None}
STAGES = [raw, canonical, teacher_candidates, filtered, distilled]


def _escalating_project(project, base_url: str, **escalate) -> None:
    """Every train question without gold; the first teacher: the embedded one with its shipped
    error profile (started by the gateway); the escalation: a server the test started."""
    project.edit_config("run_config", **ESCALATION_RUN, teacher={
        "error_profile": {}, "escalate": {"provider": "vllm", "base_url": base_url, "model": "baseline-schema-linker",
                                          **escalate}})


def test_unsettled_samples_are_escalated_once_and_labelled_as_such(project):
    project.edit_config("provider_gateway", providers={"vllm": {"price_in_per_mtok": 2.0, "price_out_per_mtok": 8.0}})
    with embedded_teacher() as strong:
        _escalating_project(project, strong.base_url)
        project.new_run("esc")
        result = materialize(project, STAGES, "esc", teacher=teacher_gateway(project))
        assert result.success
        out = ArtifactStore(project.artifacts).read("esc", "filtered")
        frame, report = out.frame, json.loads(out.files["quality_report.json"].read_text())
        escalated = frame.filter(pl.col("label_source") == "escalated")
        first = frame.filter(pl.col("label_source") == "teacher")
        [meta] = [e.event_specific_data.materialization.metadata for e in result.get_asset_materialization_events()
                  if e.event_specific_data.materialization.asset_key == filtered.key]
        # every unsettled sample asked once, of the escalation server, one answer each: the gold-free
        # samples without a kept first answer that were rejected for a reason escalation takes (one
        # answer needs a first one to confirm it: a sample none of whose answers ran is not asked)
        reasons = ["no_majority", "low_agreement", "too_few_executed", "degenerate_result", "ungrounded_literal",
                   "missing_question_number"]
        verdicts = first.group_by("sample_id", maintain_order=True).agg(
            pl.col("kept").any(), pl.col("reject_reason").is_in(reasons).any().alias("settle"))
        unsettled = verdicts.filter(~pl.col("kept") & pl.col("settle"))["sample_id"].to_list()
        assert escalated["sample_id"].to_list() == unsettled and len(unsettled) > 0
        assert len(strong.stats.calls) == strong.stats.total_calls == len(unsettled)
        assert meta["escalation_samples"].value == meta["escalation_requests"].value == len(unsettled)
        assert meta["escalation_calls"].value == len(unsettled)
        kept_escalated = escalated.filter(pl.col("kept"))["sample_id"].n_unique()
        assert meta["escalation_kept_samples"].value == kept_escalated > 0
        assert report["kept_samples_by_label_source"]["escalated"] == kept_escalated
        assert meta["escalation_input_tokens"].value > 0 and meta["escalation_provider"].value == "vllm"
        # dollars: every answer's tokens at its teacher's prices (embedded 0.15 / 0.60, vllm 2 / 8 here)
        tokens = {source: (part["prompt_tokens"].sum(), part["completion_tokens"].sum())
                  for source, part in (("teacher", first), ("escalated", escalated))}
        dollars = (tokens["teacher"][0] * 0.15 + tokens["teacher"][1] * 0.60 + tokens["escalated"][0] * 2.0
                   + tokens["escalated"][1] * 8.0) / 1e6
        assert meta["escalation_cost_usd"].value == pytest.approx(dollars - (tokens["teacher"][0] * 0.15
                                                                             + tokens["teacher"][1] * 0.60) / 1e6)
        assert meta["teacher_cost_usd"].value == pytest.approx(dollars, abs=1e-6)
        kept_samples = frame.filter(pl.col("kept"))["sample_id"].n_unique()
        assert meta["cost_per_kept_sample_usd"].value == pytest.approx(dollars / kept_samples, abs=1e-8)
        assert report["label_cost"]["kept_samples"] == kept_samples
        # a sample's rows stay together, escalated ones after the first teacher's
        runs = frame.select("sample_id", "label_source").rows()
        starts = [row for i, row in enumerate(runs) if i == 0 or row != runs[i - 1]]
        assert len(starts) == len(set(starts))   # each (sample, source) is one run of rows
        assert all(runs[i - 1][0] == sample and runs[i - 1][1] == "teacher"
                   for i, (sample, source) in enumerate(runs) if source == "escalated" and runs[i - 1][1] != source)
        # no sample has two kept labels; distilled says where each came from
        assert frame.filter(pl.col("kept"))["sample_id"].is_unique().all()
        sources = ArtifactStore(project.artifacts).read("esc", "distilled").frame["label_source"].value_counts()
        assert dict(sources.iter_rows()) == report["kept_samples_by_label_source"]
        # a second materialization of filtered asks nothing: the answers are in the response cache
        again = materialize(project, STAGES, "esc", teacher=teacher_gateway(project), selection=[filtered.key])
        assert again.success and strong.stats.total_calls == len(unsettled)


def test_escalation_is_calibrated_on_labeled_samples_without_changing_their_labels(project):
    """Half the questions keep their gold. The labeled ones the gold-free path would leave unsettled
    are asked too: their answers are calibration_only rows (never a label), and the calibration
    gives the escalated labels' precision beside the first teacher's."""
    with embedded_teacher() as strong:
        _escalating_project(project, strong.base_url)
        project.edit_config("run_config", dataset={"withhold_gold": {"share": 0.5}})
        project.new_run("cal")
        assert materialize(project, STAGES, "cal", teacher=teacher_gateway(project)).success
    out = ArtifactStore(project.artifacts).read("cal", "filtered")
    frame, report = out.frame, json.loads(out.files["quality_report.json"].read_text())
    labeled = frame.filter(pl.col("gold_sql").is_not_null())
    measured = labeled.filter(pl.col("label_source") == "escalated")
    assert measured.height > 0 and set(measured["reject_reason"]) == {"calibration_only"}
    assert not measured["kept"].any() and measured["gold_match"].null_count() < measured.height
    # each labeled sample keeps one label, its gold-matching first answer, as without escalation
    kept = labeled.filter(pl.col("kept"))
    assert set(kept["label_source"]) == {"gold"} and kept["gold_match"].all() and kept["sample_id"].is_unique().all()
    # asked: exactly the labeled samples with no shadow-kept first answer (plus the gold-free ones)
    first = labeled.filter(pl.col("label_source") == "gold").group_by("sample_id", maintain_order=True).agg(
        pl.col("shadow_kept").any())
    assert set(measured["sample_id"]) <= set(first.filter(~pl.col("shadow_kept"))["sample_id"])
    assert len(strong.stats.calls) == frame.filter(pl.col("label_source") == "escalated").height
    by_source = report["calibration"]["by_label_source"]
    shadow_escalated = measured.filter(pl.col("shadow_kept"))
    assert by_source["escalated"]["kept"] == shadow_escalated.height
    assert by_source["escalated"]["correct"] == shadow_escalated["gold_match"].sum()
    assert report["calibration"]["kept"] == by_source["teacher"]["kept"] + by_source["escalated"]["kept"]
    # the calibration rows measure, they are no candidates for a label: the report's rates leave them out
    decided = labeled.filter(pl.col("reject_reason").fill_null("") != "calibration_only")
    assert report["labeled_candidates"] == decided.height < labeled.height
    assert report["gold_match_rate"] == pytest.approx(decided["gold_match"].fill_null(False).mean(), abs=1e-6)
    assert "calibration_only" not in report["paths"]["labeled"]["reject_reason_counts"]
    assert all(e["verdict"] != "calibration_only" for e in report["examples"])
    # and what they cost is its own role
    assert report["label_cost"]["tokens"]["calibration"] == [measured["prompt_tokens"].sum(),
                                                            measured["completion_tokens"].sum(),
                                                            measured["cached_tokens"].sum()]


def test_a_killed_escalation_resumes_without_asking_again(project):
    """The filtered step is SIGKILLed (the documented command, its whole process group) while the
    escalation server answers one request at a time; the re-run asks only what had no answer yet."""
    with embedded_teacher(FaultConfig(latency_ms=150)) as strong:
        _escalating_project(project, strong.base_url, concurrency=1)
        project.edit_config("run_config", scale={"chunk_rows": 8})
        project.new_run("kill")
        assert materialize(project, STAGES[:3], "kill", teacher=teacher_gateway(project)).success
        env = {**os.environ}
        proc = subprocess.Popen(materialize_command("kill", "filtered", in_process=True), env=env, cwd=project.root,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: strong.stats.total_calls >= 4, 180, "escalation answers")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        asked_before = set(strong.stats.calls)
        subprocess.run(materialize_command("kill", "filtered", in_process=True), env=env, cwd=project.root, check=True,
                       capture_output=True, timeout=300)
    frame = ArtifactStore(project.artifacts).read("kill", "filtered").frame
    escalated = frame.filter(pl.col("label_source") == "escalated")
    assert len(asked_before) >= 4 and len(strong.stats.calls) == escalated.height
    assert sum(n - 1 for n in strong.stats.calls.values()) <= 1   # at most the one request in flight at the kill
    cache = ResponseCache(project.artifacts / "_cache" / "responses.sqlite")
    assert len(cache) >= escalated.height
    cache.close()


def test_no_gold_is_withheld_unless_the_run_config_asks(project):
    """The shipped template keeps every gold label of a user's dataset; only the demo's own settings
    (configs/demo.yaml, read by `fastdistill demo`) withhold a quarter of train and escalate."""
    from fastdistill_assets.cli import DEMO_OVERLAY
    from fastdistill_assets.config.loading import load_run_config

    template = load_run_config(project.configs / "run_config.yaml")
    assert template.dataset.withhold_gold.share == 0 and template.teacher.escalate is None
    demo = load_run_config(project.configs / "run_config.yaml", overlay=project.configs / DEMO_OVERLAY)
    assert (demo.dataset.withhold_gold.share, demo.dataset.withhold_gold.splits) == (0.25, ["train"])
    assert demo.teacher.escalate == EscalateConfig(provider="embedded_strong")
    assert demo.model_dump(exclude={"dataset", "teacher"}) == template.model_dump(exclude={"dataset", "teacher"})
    # a user's WikiSQL split with the shipped template: every question reaches the pipeline with its gold
    shutil.copy(REPO_CONFIGS / "run_config.yaml", project.configs / "run_config.yaml")
    questions = [{**GOOD, "question": f"How many goals did Ana Silva score in game {i}?"} for i in range(8)]
    folder = write_wikisql(project.root / "wikisql", "train", questions)
    project.edit_config("run_config", dataset={"kind": "wikisql", "path": str(folder), "splits": ["train"]})
    project.new_run("mine")
    assert materialize(project, [raw, canonical], "mine").success
    frame = ArtifactStore(project.artifacts).read("mine", "canonical")
    assert frame.height == 8 and frame["gold_sql"].null_count() == 0 and frame["withheld_gold_sql"].null_count() == 8
