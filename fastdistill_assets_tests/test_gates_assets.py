import json

import polars as pl

from fastdistill_assets.assets.data import canonical, raw
from fastdistill_assets.assets.gates import distilled, filtered
from fastdistill_assets.assets.teacher import teacher_candidates
from fastdistill_assets.checks import distilled_not_empty, gate_checks
from fastdistill_assets.storage import ArtifactStore
from fastdistill_assets_tests.conftest import materialize, teacher_gateway

ASSETS = [raw, canonical, teacher_candidates, filtered, distilled, *gate_checks, distilled_not_empty]


def _checks(result):
    return {e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}


def _materialized(result):
    return {e.event_specific_data.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def test_pipeline_through_distilled_with_all_checks(project):
    project.edit_config("run_config", dataset={"limit_per_split": 80})
    project.new_run("r1")
    result = materialize(project, ASSETS, "r1", teacher=teacher_gateway(project))
    assert result.success
    checks = _checks(result)
    assert set(checks) == {"empty_output_rate", "rule_pass_rate", "parse_pass_rate", "exec_pass_rate",
                           "gold_match_rate", "judge_mean", "p_keep", "gold_free_p_keep", "agreement_p50",
                           "distilled_not_empty"}
    assert all(passed for passed, _ in checks.values())
    store = ArtifactStore(project.artifacts)
    filtered_out, distilled_out = store.read("r1", "filtered"), store.read("r1", "distilled")
    report = json.loads(filtered_out.files["quality_report.json"].read_text())
    assert report["candidates"] == 80 and report["kept"] == distilled_out.frame.height > 0
    assert sum(report["reject_reason_counts"].values()) == report["rejected"]
    sft = [json.loads(line) for line in distilled_out.files["sft.jsonl"].read_text().splitlines()]
    assert len(sft) == report["kept"]
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    assert "```" not in sft[0]["messages"][-1]["content"]


def test_failing_blocking_gate_stops_downstream_and_warning_does_not(project):
    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"]})
    project.edit_config("quality_gates", checks={
        "exec_pass_rate": {"metric": "exec_pass_rate", "op": ">=", "value": 1.01, "blocking": False}})
    project.new_run("warn")
    result = materialize(project, ASSETS, "warn", teacher=teacher_gateway(project))
    assert _checks(result)["exec_pass_rate"] == (False, "WARN")
    assert "distilled" in _materialized(result)

    project.edit_config("quality_gates", checks={
        "exec_pass_rate": {"metric": "exec_pass_rate", "op": ">=", "value": 1.01, "blocking": True}})
    project.new_run("block")
    result = materialize(project, ASSETS, "block", teacher=teacher_gateway(project), raise_on_error=False)
    assert not result.success
    assert _checks(result)["exec_pass_rate"] == (False, "ERROR")
    assert "filtered" in _materialized(result) and "distilled" not in _materialized(result)


def test_llm_judge_scores_once_and_reuses_stored_verdicts(project):
    project.edit_config("run_config", dataset={"limit_per_split": 30, "splits": ["train"]})
    project.edit_config("quality_gates", judge={"enabled": True, "min_score": 0.0})
    project.new_run("r1")
    first = materialize(project, ASSETS, "r1", teacher=teacher_gateway(project))
    frame = ArtifactStore(project.artifacts).read("r1", "filtered").frame
    executed = frame.filter(pl.col("exec_ok").fill_null(False))
    assert executed["judge_source"].to_list() == ["llm"] * executed.height
    assert frame.filter(~pl.col("exec_ok").fill_null(False))["judge_score"].null_count() == \
        frame.height - executed.height
    meta = {e.event_specific_data.materialization.asset_key.path[-1]: e.event_specific_data.materialization.metadata
            for e in first.get_asset_materialization_events()}
    assert meta["filtered"]["judge_calls"].value == executed.height
    again = materialize(project, ASSETS, "r1", selection=[filtered], teacher=teacher_gateway(project))
    [event] = again.get_asset_materialization_events()
    assert event.event_specific_data.materialization.metadata["judge_calls"].value == 0


def test_multi_decode_rationale_and_preference_pairs(project):
    project.edit_config("run_config", dataset={"limit_per_split": 20, "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 1.0},
                        recipe={"rationale": True, "multi_decode_select": True, "preference_pairs": True})
    project.new_run("r1")
    assert materialize(project, ASSETS, "r1", teacher=teacher_gateway(project)).success
    store = ArtifactStore(project.artifacts)
    filtered_frame = store.read("r1", "filtered").frame
    out = store.read("r1", "distilled")
    assert filtered_frame.height == 60
    assert out.frame["sample_id"].n_unique() == out.frame.height  # best-of-n: one per input
    not_selected = filtered_frame.filter(pl.col("reject_reason") == "not_selected")
    assert not_selected.height > 0 and set(not_selected["sample_id"]) <= set(out.frame["sample_id"])
    assert filtered_frame.group_by("sample_id").agg(pl.col("kept").sum())["kept"].max() == 1
    assert out.frame["rationale"].null_count() == 0
    sft = json.loads(out.files["sft.jsonl"].read_text().splitlines()[0])
    assert sft["messages"][-1]["content"].startswith("### RATIONALE")
    pairs = [json.loads(line) for line in out.files["preference_pairs.jsonl"].read_text().splitlines()]
    assert 0 < len(pairs) <= out.frame.height
    assert all(p["chosen"] and p["rejected_reason"] and p["chosen"] != p["rejected"] for p in pairs)
    assert pl.read_parquet(out.files["preference_pairs.parquet"]).height == len(pairs)
