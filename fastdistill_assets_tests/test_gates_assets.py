import json

import polars as pl
import pytest

from fastdistill_assets.config.loading import ConfigError, load_gates
from fastdistill_assets.config.models import GatesConfig, JudgeGates, TeacherConfig
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.defs.checks import build_gate_checks, distilled_not_empty
from fastdistill_assets.gates.judge import judge_requests, run_judge
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.embedded import embedded_judge_reply
from fastdistill_assets_tests.conftest import REPO_CONFIGS, materialize, teacher_gateway
from fastdistill_assets_tests.db_fixtures import make_sqlite

ASSETS = [raw, canonical, teacher_candidates, filtered, distilled,
          *build_gate_checks(load_gates(REPO_CONFIGS / "quality_gates.yaml")), distilled_not_empty]


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
    assert set(checks) == {*load_gates(project.configs / "quality_gates.yaml").checks, "distilled_not_empty"}
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


PLAYER_SCHEMA = "CREATE TABLE player (name TEXT, club TEXT, goals INTEGER, rating REAL)"


def _gated_by_club(tmp_path, clubs: list[str]) -> pl.DataFrame:
    """Real gates over a real SQLite file: one gold-free candidate per club, written as the embedded
    baseline would write it (so the embedded judge agrees with it)."""
    db = make_sqlite(tmp_path / "players.sqlite")
    rows = [{"candidate_id": club, "question": f"What is the name when club is {club}?", "schema": PLAYER_SCHEMA,
             "raw_output": f"SELECT name FROM player WHERE club = '{club}'", "error": None, "dialect": "sqlite",
             "db_path": str(db), "gold_sql": None} for club in clubs]
    return gate_frame(pl.DataFrame(rows), GatesConfig())


def test_the_judge_is_shown_the_result_rows_and_an_empty_result_as_empty(project, tmp_path):
    frame = _gated_by_club(tmp_path, ["Madrid", "Porto"])
    assert [json.loads(p) for p in frame["result_preview"]] == [[], [["Ana"], ["Cai"]]]
    empty, full = judge_requests(frame)
    assert empty.messages[-1]["content"].endswith("### Result rows\n[]")
    assert full.messages[-1]["content"].endswith('### Result rows\n[["Ana"], ["Cai"]]')
    assert (embedded_judge_reply(empty.messages), embedded_judge_reply(full.messages)) == ("Score: 4", "Score: 5")
    scores, calls = run_judge(frame, teacher_gateway(project), JudgeGates(enabled=True), TeacherConfig())
    assert scores == {"Madrid": (0.75, None), "Porto": (1.0, None)} and calls == 2


def test_a_student_is_refused_as_judge_before_any_call(project, tmp_path):
    frame, gateway = _gated_by_club(tmp_path, ["Porto"]), teacher_gateway(project)
    student_teacher = TeacherConfig(provider="student", model="parent-run")
    with pytest.raises(ConfigError, match=r"^quality_gates.yaml: judge.provider is null and the teacher provider "
                                          r"is 'student', which cannot judge: set judge.provider in quality_gates"):
        run_judge(frame, gateway, JudgeGates(enabled=True), student_teacher)
    with pytest.raises(ConfigError, match=r"judge.provider is 'student', which cannot judge"):
        run_judge(frame, gateway, JudgeGates(enabled=True, provider="student"), TeacherConfig())
    scores, _ = run_judge(frame, gateway, JudgeGates(enabled=True, provider="embedded"), student_teacher)
    assert scores == {"Porto": (1.0, None)}  # a judge of its own judges a student-taught run


def test_distilled_leaves_no_work_of_earlier_inputs_behind(project):
    project.edit_config("run_config", dataset={"limit_per_split": 20, "splits": ["train", "test"]})
    project.new_run("r1")
    work = project.artifacts / "r1" / "_work" / "distilled"
    stale = work / "0123456789abcdef01234567"   # a step killed while publishing from an earlier filtered
    stale.mkdir(parents=True)
    (stale / "part-000000.parquet").write_bytes(b"old")
    assert materialize(project, ASSETS, "r1", teacher=teacher_gateway(project)).success
    assert not stale.exists()
    # filtered again (its timing columns, so its content hash, change): distilled again keeps one folder at most
    assert materialize(project, ASSETS, "r1", selection=[filtered, distilled], teacher=teacher_gateway(project)).success
    assert len([p for p in work.iterdir()] if work.exists() else []) <= 1


def test_distilled_work_follows_filtered_s_verdicts_not_its_timings(project):
    from fastdistill_assets.gates.sft_export import untimed_content_hash

    project.edit_config("run_config", dataset={"limit_per_split": 20, "splits": ["train"]})
    project.new_run("r1")
    store = ArtifactStore(project.artifacts)
    assert materialize(project, ASSETS, "r1", selection=[raw, canonical, teacher_candidates, filtered],
                       teacher=teacher_gateway(project)).success
    first = store.scan("r1", "filtered")
    assert materialize(project, ASSETS, "r1", selection=[filtered], teacher=teacher_gateway(project)).success
    again = store.scan("r1", "filtered")
    assert again.manifest["content_hash"] != first.manifest["content_hash"]   # its gate_ms / exec_ms differ
    assert again.collect().drop("gate_ms", "exec_ms").equals(first.collect().drop("gate_ms", "exec_ms"))
    assert untimed_content_hash(again) == untimed_content_hash(first)         # what distilled is keyed on
    # a verdict that changes changes it
    frame = again.collect().with_columns(kept=pl.Series([not k for k in again.collect()["kept"]]))
    store.write("r1", "filtered", frame)
    assert untimed_content_hash(store.scan("r1", "filtered")) != untimed_content_hash(first)
