"""Self-consistency verdicts on hand-made candidate sets, and the per-path quality report."""

import json

import polars as pl
import pytest

from fastdistill_assets.config.models import (
    ConsistencyGates,
    GatesConfig,
    RecipeConfig,
    RunConfig,
    TeacherConfig,
    gold_free_notes,
)
from fastdistill_assets.gates.consistency import (
    LOW_AGREEMENT,
    MINORITY,
    NO_MAJORITY,
    TOO_FEW,
    apply_consistency,
    sample_verdicts,
)
from fastdistill_assets.gates.gold import result_signature
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.gates.quality_report import quality_report
from fastdistill_assets.gates.select import attach_judge, select
from fastdistill_assets.gates.sft_export import preference_pairs
from fastdistill_assets.gates.stage import gate_chunk
from fastdistill_assets_tests.db_fixtures import make_sqlite

EMPTY = result_signature([])
DEFAULT = ConsistencyGates(min_agreement=0.6, min_executed=2)


@pytest.mark.parametrize(("signatures", "config", "agreement", "reasons"), [
    (["A", "A", "A", "B", "C"], DEFAULT, 0.6, [None, None, None, MINORITY, MINORITY]),
    (["A", "A", "B", "B"], DEFAULT, 0.5, [NO_MAJORITY] * 4),                          # tie
    (["A", "B", "C"], DEFAULT, 1 / 3, [NO_MAJORITY] * 3),                             # all different
    ([None, None, None], DEFAULT, None, [None, None, None]),                          # all failing
    ([EMPTY, EMPTY, None], DEFAULT, 1.0, [None, None, None]),                         # empty results agree
    (["A", None, None], DEFAULT, 1.0, [TOO_FEW, None, None]),                         # one executed
    (["A", "A", "B", None, None], DEFAULT, 2 / 3, [None, None, MINORITY, None, None]),
    (["A", "A", "B", "C", "D"], DEFAULT, 0.4, [LOW_AGREEMENT] * 5),
    (["A", "A", "A", "B"], ConsistencyGates(min_agreement=1.0), 0.75, [LOW_AGREEMENT] * 4),
    (["A"], ConsistencyGates(min_executed=1), 1.0, [None]),
    ([], DEFAULT, None, []),
])
def test_sample_verdicts(signatures, config, agreement, reasons):
    got_agreement, got_reasons = sample_verdicts(signatures, config)
    assert got_reasons == reasons
    assert got_agreement == (pytest.approx(agreement) if agreement is not None else None)


GOLD = "SELECT name FROM player WHERE club = 'Porto'"
# (sample, gold_sql, raw_output, teacher error); db_fixtures.ROWS: Ana/Cai play for Porto.
CANDIDATES = [
    ("L1", GOLD, GOLD, None),                                              # labeled: kept
    ("L1", GOLD, "SELECT name FROM player", None),                         # labeled: gold_mismatch
    ("U1", None, GOLD, None),                                              # majority (2 of 3)
    ("U1", None, f"```sql\n{GOLD};\n```", None),                           # majority after cleaning
    ("U1", None, "SELECT name FROM player WHERE goals = 7", None),         # minority_result
    ("U2", None, "SELECT COUNT(*) FROM player", None),                     # tie 1-1: no_majority
    ("U2", None, "SELECT MAX(goals) FROM player", None),                   # no_majority
    ("U3", None, "SELECT name FROM player WHERE club = 'Rome'", None),     # empty result
    ("U3", None, "SELECT club FROM player WHERE goals > 100", None),       # empty result, agrees
    ("U3", None, "SELECT nme FROM player", None),                          # exec_error
    ("U4", None, "SELECT name FROM player WHERE club = 'Lyon'", None),     # too_few_executed
    ("U4", None, None, "server_error"),                                    # teacher_error
]


PLAIN_VOTE = {"grounding": {"enabled": False}, "consistency": {"degenerate_result": "keep"}}


def _filtered(tmp_path, empty_result: str, multi_decode: bool = False, gates: dict | None = None) -> pl.DataFrame:
    """The candidates gated; ``gates`` (default: the plain vote, no grounding or degenerate rule)."""
    db_path = str(make_sqlite(tmp_path / "db.sqlite"))
    frame = pl.DataFrame([{
        "candidate_id": f"c{i}", "sample_id": sample, "generation_index": i, "raw_output": raw, "error": err,
        "db_path": db_path, "dialect": "sqlite", "gold_sql": gold,
        "question": "q", "schema": "s", "messages": json.dumps([{"role": "user", "content": "q"}]),
    } for i, (sample, gold, raw, err) in enumerate(CANDIDATES)],
        schema_overrides={"raw_output": pl.String, "error": pl.String, "gold_sql": pl.String})
    gates = GatesConfig.model_validate({"execution": {"empty_result": empty_result},
                                        **(PLAIN_VOTE if gates is None else gates)})
    filtered, summary = gate_chunk(frame, gates, RecipeConfig(multi_decode_select=multi_decode), None, TeacherConfig())
    assert summary == {"judge_calls": 0, "escalation": None}
    return filtered


def test_default_gates_reject_ungrounded_literals_before_the_vote(tmp_path):
    """With the shipped gates, 'Rome' occurs in no club: that candidate leaves the vote, so U3 has one
    executed candidate left (too few); 'Lyon' and 'Porto' are grounded."""
    filtered = _filtered(tmp_path, "keep", gates={})
    assert filtered["reject_reason"].to_list() == [
        None, "gold_mismatch", None, None, MINORITY, NO_MAJORITY, NO_MAJORITY, "ungrounded_literal", TOO_FEW,
        "exec_error", TOO_FEW, "teacher_error"]
    assert filtered["ungrounded"].to_list()[7] == "player.club = 'Rome'"
    assert filtered["ungrounded"].null_count() == filtered.height - 1
    assert filtered["result_degenerate"].to_list()[7:9] == [True, True]


def test_mixed_frame_verdicts_and_per_path_report(tmp_path):
    filtered = _filtered(tmp_path, "keep")
    assert filtered["reject_reason"].to_list() == [
        None, "gold_mismatch", None, None, MINORITY, NO_MAJORITY, NO_MAJORITY, None, None, "exec_error",
        TOO_FEW, "teacher_error"]
    assert filtered["agreement"].to_list()[:2] == [None, None]
    assert filtered["agreement"].to_list()[2:] == pytest.approx([2 / 3] * 3 + [0.5] * 2 + [1.0] * 3 + [1.0] * 2)

    report = quality_report(filtered)
    labeled, gold_free = report["paths"]["labeled"], report["paths"]["gold_free"]
    assert labeled == {"candidates": 2, "samples": 1, "kept": 1, "kept_samples": 1, "p_keep": 1.0,
                       "reject_reason_counts": {"gold_mismatch": 1}}
    assert {k: gold_free[k] for k in ("candidates", "samples", "kept", "kept_samples", "p_keep")} == \
        {"candidates": 10, "samples": 4, "kept": 4, "kept_samples": 2, "p_keep": 0.5}
    assert gold_free["reject_reason_counts"] == {NO_MAJORITY: 2, "exec_error": 1, MINORITY: 1,
                                                 "teacher_error": 1, TOO_FEW: 1}
    # per-sample agreement: U1 2/3, U2 1/2, U3 1, U4 1 -> median 5/6, p90 1.0
    assert gold_free["agreement_p50"] == pytest.approx(5 / 6, abs=1e-6)
    assert gold_free["agreement_p90"] == pytest.approx(1.0)
    assert gold_free["samples_nothing_executed"] == 0
    assert (report["labeled_candidates"], report["gold_free_candidates"]) == (2, 10)
    assert report["gold_match_rate"] == 0.5  # over labeled candidates only
    assert (report["labeled_p_keep"], report["gold_free_p_keep"]) == (1.0, 0.5)
    # p_keep counts samples: L1, U1 and U3 of five keep a candidate
    assert (report["kept"], report["kept_samples"], report["p_keep"]) == (5, 3, 0.6)


def test_empty_result_reject_applies_to_both_paths(tmp_path):
    filtered = _filtered(tmp_path, "reject")
    reasons = dict(zip(filtered["candidate_id"], filtered["reject_reason"], strict=True))
    assert reasons["c7"] == reasons["c8"] == "empty_result"
    assert filtered.filter(pl.col("sample_id") == "U3")["agreement"].to_list() == [None] * 3
    report = quality_report(filtered)
    gold_free = report["paths"]["gold_free"]
    assert gold_free["kept"] == 2 and gold_free["samples_nothing_executed"] == 1
    # U1 2/3, U2 1/2, U3 none alive -> 0, U4 1 -> median 7/12: a failing sample pulls the p50 down
    assert gold_free["agreement_p50"] == pytest.approx(7 / 12, abs=1e-6)


def test_empty_result_judge_requires_the_judge():
    with pytest.raises(ValueError, match="empty_result: judge needs judge.enabled"):
        GatesConfig.model_validate({"execution": {"empty_result": "judge"}})
    assert GatesConfig.model_validate({"execution": {"empty_result": "judge"}, "judge": {"enabled": True}})


def test_report_of_a_run_without_gold_free_samples_has_null_path_metrics(tmp_path):
    report = quality_report(_filtered(tmp_path, "keep").filter(pl.col("gold_sql").is_not_null()))
    assert report["gold_free_p_keep"] is None and report["agreement_p50"] is None
    assert report["paths"]["gold_free"]["candidates"] == 0


def test_empty_result_judge_keeps_only_what_the_judge_approves(tmp_path):
    db_path = str(make_sqlite(tmp_path / "db.sqlite"))
    empty = "SELECT name FROM player WHERE club = 'Rome'"
    rows = [("L1", "SELECT name FROM player WHERE club = 'Rome'", empty),  # labeled, empty gold: matches
            ("U1", None, empty), ("U1", None, empty),                      # gold-free, empty majority
            ("U2", None, GOLD), ("U2", None, GOLD)]                        # gold-free, rows: judge not needed
    frame = pl.DataFrame([{"candidate_id": f"c{i}", "sample_id": s, "generation_index": i, "raw_output": out,
                           "error": None, "db_path": db_path, "dialect": "sqlite", "gold_sql": gold, "question": "q"}
                          for i, (s, gold, out) in enumerate(rows)],
                         schema_overrides={"error": pl.String, "gold_sql": pl.String})
    gates = GatesConfig.model_validate({"execution": {"empty_result": "judge"},
                                        "judge": {"enabled": True, "min_score": 0.75}, **PLAIN_VOTE})
    gated = apply_consistency(gate_frame(frame, gates), gates.consistency)
    scores = {"c0": (1.0, None), "c1": (0.75, None), "c2": (0.5, None), "c3": (0.5, None), "c4": (0.5, None)}
    chosen = select(attach_judge(gated, scores), gates, multi_decode=False)
    assert chosen["reject_reason"].to_list() == [None, None, "empty_result_judged_wrong", None, None]



def test_preference_pairs_on_the_gold_free_path_reject_a_failing_answer(tmp_path):
    filtered = _filtered(tmp_path, "keep", multi_decode=True)
    assert filtered.filter(pl.col("kept"))["candidate_id"].to_list() == ["c0", "c2", "c8"]
    pairs = {p["sample_id"]: p for p in preference_pairs(filtered.reverse())}  # ranking must not rely on row order
    # U1: the majority answer against the minority one, never against its agreeing twin (c3)
    assert (pairs["U1"]["chosen"], pairs["U1"]["rejected_reason"]) == (GOLD, MINORITY)
    assert pairs["U1"]["rejected"] == "SELECT name FROM player WHERE goals = 7"
    assert pairs["U3"]["rejected_reason"] == "exec_error" and pairs["L1"]["rejected_reason"] == "gold_mismatch"
    assert "U2" not in pairs and "U4" not in pairs  # nothing kept there


@pytest.mark.parametrize(("dataset", "decode", "expected"), [
    ({"kind": "questions"}, {"num_generations": 1}, "num_generations 1 < consistency.min_executed 2"),
    ({"withhold_gold": {"share": 0.2}}, {"num_generations": 5, "temperature": 0.0}, "temperature 0"),
    ({"kind": "questions"}, {"num_generations": 5, "temperature": 0.4}, None),
    ({}, {"num_generations": 1}, None),  # every sample has gold: nothing to warn about
])
def test_run_new_warns_when_self_consistency_cannot_work(dataset, decode, expected):
    notes = gold_free_notes(RunConfig(dataset=dataset, decode=decode), GatesConfig())
    assert (expected in notes[0]) if expected else notes == []
