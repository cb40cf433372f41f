"""The whole pipeline through eval_report, hard gates, alerts, and the student served as a teacher."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import openai
import pytest

from fastdistill_assets.core.prompt_format import build_messages
from fastdistill_assets.defs.alerts import AlertSinks
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.defs.sensors import failed_check_alerts
from fastdistill_assets.evaluation.evaluate import eval_items
from fastdistill_assets.evaluation.pipeline_metrics import (
    latest_materializations,
    step_spans,
    wall_clock_s,
)
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.training.serving import student_server
from fastdistill_assets.training.students import examples_from, load_student
from fastdistill_assets.training.ungated import (
    UNGATED_SQL_COLUMN,
    ungated_training_set,
)
from fastdistill_assets_tests.conftest import (
    ALL_ASSETS,
    every_definition,
    materialize,
    teacher_gateway,
)

ASSETS = [a for a in ALL_ASSETS if not isinstance(a, dg.AssetChecksDefinition)]


def _small(project, **gates):
    project.edit_config("run_config", dataset={"limit_per_split": 120}, training={"epochs": 6})
    if gates:
        project.edit_config("quality_gates", **gates)


@pytest.fixture
def trained(project):
    _small(project)
    project.new_run("r1")
    result = materialize(project, every_definition(project), "r1", teacher=teacher_gateway(project))
    return project, result


def _step_times(instance, dagster_run_id: str) -> tuple[dict[str, float], dict[str, float]]:
    """(first STEP_START, last STEP_SUCCESS) timestamps per stage, read from the run's events; a
    sharded stage's steps (`<stage>.<op>[shard]`) count as its own."""
    events = instance.all_logs(dagster_run_id, of_type={dg.DagsterEventType.STEP_START,
                                                        dg.DagsterEventType.STEP_SUCCESS})
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for e in events:
        stage = e.step_key.split(".")[0]
        if e.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[stage] = min(starts.get(stage, e.timestamp), e.timestamp)
        else:
            ends[stage] = max(ends.get(stage, e.timestamp), e.timestamp)
    return starts, ends


def _materializations(instance, asset: str, run_id: str) -> int:
    """How many times ``asset`` was materialized for partition ``run_id``."""
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[run_id])
    return len(instance.fetch_materializations(records_filter, limit=100).records)


def test_all_assets_and_hard_gates(trained):
    project, result = trained
    assert result.success
    out = ArtifactStore(project.artifacts).read("r1", "eval_report")
    report = json.loads(out.files["eval_report.json"].read_text())
    frame = out.frame
    assert frame.height == report["student"]["n"] == 120
    assert report["student"]["correct"] == frame["student_correct"].sum()
    assert report["teacher"]["correct"] == frame["teacher_correct"].sum()
    assert report["baseline"]["kind"] == "ungated" and report["baseline"]["n"] == 120
    assert report["baseline"]["correct"] == frame["baseline_correct"].sum()
    paired = report["paired_comparison"]
    b = (frame["student_correct"] & ~frame["baseline_correct"]).sum()
    c = (~frame["student_correct"] & frame["baseline_correct"]).sum()
    assert (paired["applicable"], paired["n"], paired["student_only"], paired["baseline_only"]) == (True, 120, b, c)
    assert paired["difference"] == pytest.approx(report["student"]["accuracy"] - report["baseline"]["accuracy"],
                                                 abs=1e-5)
    assert paired["ci95_low"] <= paired["difference"] <= paired["ci95_high"]
    assert paired["verdict"].startswith("the gated student") and "McNemar p = " in paired["verdict"]
    wins = (frame["student_correct"] & ~frame["teacher_correct"]).sum()
    assert report["online_win_rate"]["wins"] == wins
    assert set(report["hard_gates"]) == {"test_exec_accuracy_vs_baseline", "online_win_rate"}
    timing = report["timing"]
    assert set(timing["stages"]) >= {"raw", "teacher_candidates", "filtered", "student_model", "eval_report"}
    assert timing["teacher_tokens_per_sec"] > 0 and timing["train_tokens_per_sec"] > 0
    assert timing["teacher_cached_share"] in (0.0, None)  # None until the teacher reports it
    assert out.files["accuracy.png"].read_bytes()[:4] == b"\x89PNG"
    markdown = out.files["eval_report.md"].read_text()
    assert "| hard gate |" in markdown and f"b = {b} (only the student right), c = {c}" in markdown
    assert f"{paired['verdict'][0].upper()}{paired['verdict'][1:]}." in markdown
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    baseline_check = checks["test_exec_accuracy_vs_baseline"]
    assert baseline_check.passed == report["hard_gates"]["test_exec_accuracy_vs_baseline"]["passed"]
    assert baseline_check.metadata["mcnemar_p"].value == pytest.approx(paired["mcnemar_p"])
    assert (baseline_check.metadata["discordant_student_only"].value,
            baseline_check.metadata["discordant_baseline_only"].value) == (b, c)
    metadata = result.asset_materializations_for_node("eval_report")[0].metadata
    assert metadata["paired_difference"].value == paired["difference"]
    assert metadata["mcnemar_p"].value == paired["mcnemar_p"]
    model = ArtifactStore(project.artifacts).read("r1", "student_model")
    assert model.frame["used"][0] > 0 and (model.files["model"] / "weights.npz").exists()
    baseline = ArtifactStore(project.artifacts).read("r1", "baseline_model")
    assert baseline.frame["kind"][0] == "ungated" and (baseline.files["model"] / "weights.npz").exists()
    # trained on the teacher's first answer per question, gated or not
    ungated = ungated_training_set(ArtifactStore(project.artifacts).read("r1", "filtered").frame)
    assert baseline.frame["examples"][0] == len(examples_from(ungated, UNGATED_SQL_COLUMN)) == 120


def test_eval_report_evaluates_the_stored_baseline_without_training(trained, monkeypatch):
    """baseline_model is its own materialization; eval_report alone reads it and trains nothing."""
    from fastdistill_assets.defs.assets.evaluation import eval_report
    from fastdistill_assets.training import students

    project, first = trained
    assert "baseline_model" in {e.asset_key.path[-1] for e in first.get_asset_materialization_events()}
    store = ArtifactStore(project.artifacts)
    before = store.read("r1", "eval_report").frame["baseline_correct"].to_list()

    def no_training(*args, **kwargs):
        raise AssertionError("eval_report trained a model")

    monkeypatch.setattr(students, "train_sketch", no_training)
    again = materialize(project, every_definition(project), "r1", selection=[eval_report],
                        teacher=teacher_gateway(project))
    assert again.success
    assert {e.asset_key.path[-1] for e in again.get_asset_materialization_events()} == {"eval_report"}
    assert _materializations(project.instance, "baseline_model", "r1") == 1
    assert _materializations(project.instance, "eval_report", "r1") == 2
    assert store.read("r1", "eval_report").frame["baseline_correct"].to_list() == before


def test_batched_and_one_by_one_student_answers_are_identical(trained):
    project, _ = trained
    store = ArtifactStore(project.artifacts)
    student = load_student(store.read("r1", "student_model").files["model"])
    _, items = eval_items(store.read("r1", "canonical"), "test")
    prompts = [item.messages() for item in items]
    prompts[3] = [{"role": "user", "content": "no schema here"}]  # one the student cannot read: None
    one_by_one = []
    for messages in prompts:
        try:
            one_by_one.append(student.answer(messages))
        except ValueError:
            one_by_one.append(None)
    assert one_by_one[3] is None and sum(a is not None for a in one_by_one) == len(items) - 1
    for batch_size in (1, 7, 16, 500):
        assert student.answer_many(prompts, batch_size) == one_by_one


def test_timing_report_takes_the_wall_clock_from_the_step_events(trained):
    project, result = trained
    out = ArtifactStore(project.artifacts).read("r1", "eval_report")
    timing = json.loads(out.files["eval_report.json"].read_text())["timing"]
    starts, ends = _step_times(project.instance, result.run_id)
    data_wall = ends["distilled"] - starts["raw"]
    kept = ArtifactStore(project.artifacts).read("r1", "distilled").frame.height
    assert timing["data_wall_s"] == round(data_wall, 3) and timing["data_dagster_runs"] == 1
    assert timing["pipeline_kept_samples_per_hour"] == round(kept / data_wall * 3600, 1)
    for stage in ("raw", "teacher_candidates", "filtered", "distilled", "student_model"):
        assert timing["stages"][stage]["step_s"] == round(ends[stage] - starts[stage], 3)
    # the real wall clock holds more than the assets' bodies: steps' IO, checks, Dagster's work
    body = sum(timing["stages"][s]["wall_s"] for s in ("raw", "canonical", "teacher_candidates", "filtered",
                                                       "distilled"))
    assert timing["data_wall_s"] > body
    # raw's start to the report inside eval_report: after training ended, before eval_report ended
    assert ends["student_model"] - starts["raw"] < timing["pipeline_wall_s"] < ends["eval_report"] - starts["raw"]
    assert 0 < timing["stages"]["eval_report"]["step_s"] < ends["eval_report"] - starts["eval_report"]
    model = ArtifactStore(project.artifacts).read("r1", "student_model").frame.row(0, named=True)
    assert model["train_s"] < model["wall_s"]  # the sketch trainer's fitting epochs, feature extraction out
    assert timing["train_tokens_per_sec"] == round(model["train_tokens"] / model["train_s"], 1)
    markdown = out.files["eval_report.md"].read_text()
    assert f"= kept / data_wall_s {timing['data_wall_s']} s (raw step start -> distilled step end)" in markdown
    assert "| stage | wall_s | step_s |" in markdown


def test_stage_spans_from_several_dagster_runs(project):
    """raw..teacher_candidates in one Dagster run, filtered and distilled in a later one."""
    project.edit_config("run_config", dataset={"limit_per_split": 20, "splits": ["train"]})
    project.new_run("split")
    first = materialize(project, ASSETS, "split", selection=[raw, canonical, teacher_candidates],
                        teacher=teacher_gateway(project))
    time.sleep(0.5)
    second = materialize(project, ASSETS, "split", selection=[filtered, distilled], teacher=teacher_gateway(project))
    spans = step_spans(project.instance, latest_materializations(project.instance, "split"))
    (s1, e1), (s2, e2) = _step_times(project.instance, first.run_id), _step_times(project.instance, second.run_id)
    assert {stage: span.dagster_run_id for stage, span in spans.items()} == {
        "raw": first.run_id, "canonical": first.run_id, "teacher_candidates": first.run_id,
        "filtered": second.run_id, "distilled": second.run_id}
    assert (spans["raw"].start, spans["teacher_candidates"].end) == (s1["raw"], e1["teacher_candidates"])
    assert (spans["filtered"].start, spans["distilled"].end) == (s2["filtered"], e2["distilled"])
    wall = wall_clock_s(spans.values())
    assert wall == pytest.approx(e1["teacher_candidates"] - s1["raw"] + e2["distilled"] - s2["filtered"])
    assert wall < e2["distilled"] - s1["raw"] - 0.5  # the pause between the runs is not counted


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failing_hard_gate_blocks_and_fires_an_alert_to_the_webhook(project, tmp_path):
    _small(project, eval={"baseline": {"kind": "fixed", "value": 0.999}})
    project.new_run("strict")
    result = materialize(project, every_definition(project), "strict", teacher=teacher_gateway(project), raise_on_error=False)
    assert not result.success
    checks = {e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}
    assert checks["test_exec_accuracy_vs_baseline"] == (False, "ERROR")
    baseline = ArtifactStore(project.artifacts).read("strict", "baseline_model")  # a fixed value: nothing trained
    assert baseline.frame.to_dicts() == [{"kind": "fixed"}] and baseline.files == {}
    out = ArtifactStore(project.artifacts).read("strict", "eval_report")
    paired = json.loads(out.files["eval_report.json"].read_text())["paired_comparison"]
    assert paired["applicable"] is False
    assert "The McNemar test is not applicable to the fixed baseline" in out.files["eval_report.md"].read_text()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received = []
    sinks = AlertSinks(jsonl_path=str(tmp_path / "alerts.jsonl"),
                       webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    try:
        context = dg.build_sensor_context(instance=project.instance, resources={"alerts": sinks})
        failed_check_alerts(context)
    finally:
        server.shutdown()
    [payload] = _Receiver.received
    assert "test_exec_accuracy_vs_baseline" in payload["text"] and "strict" in payload["text"]
    [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["check"] == "test_exec_accuracy_vs_baseline"
    _Receiver.received = []
    failed_check_alerts(dg.build_sensor_context(instance=project.instance, cursor=context.cursor,
                                                resources={"alerts": sinks}))
    assert _Receiver.received == []  # the cursor moved on: no duplicate alert


def test_served_student_answers_and_becomes_the_next_teacher(trained):
    project, _ = trained
    with student_server(project.registry, "r1") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        schema = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 REAL -- Goals\n)"
        reply = client.chat.completions.create(
            model="student-r1", messages=build_messages("What is the highest goals?", schema, []))
    assert reply.choices[0].message.content == "SELECT MAX(col1) FROM t"

    frozen = project.registry.create("child", parent_run_id="r1")
    project.instance.add_dynamic_partitions("run_id", ["child"])
    assert frozen.config.parent_run_id == "r1" and frozen.config.teacher.provider == "student"
    result = materialize(project, ASSETS, "child", selection=[raw, canonical, teacher_candidates],
                         teacher=teacher_gateway(project))
    assert result.success
    candidates = ArtifactStore(project.artifacts).read("child", "teacher_candidates")
    assert candidates["error"].null_count() == candidates.height
    assert candidates["provider"].unique().to_list() == ["student"]
    assert candidates["raw_output"].str.starts_with("SELECT").all()


def test_judge_decides_win_rate_ties_when_configured(project):
    _small(project, judge={"enabled": True}, eval={"blocking": False})
    project.new_run("judged")
    assert materialize(project, every_definition(project), "judged", teacher=teacher_gateway(project)).success
    out = ArtifactStore(project.artifacts).read("judged", "eval_report")
    report = json.loads(out.files["eval_report.json"].read_text())
    win = report["online_win_rate"]
    frame = out.frame
    decisive = (frame["student_correct"] != frame["teacher_correct"]).sum()
    assert win["judge_decided_ties"] is True
    assert win["wins"] + win["losses"] + win["ties"] == frame.height
    # The embedded judge prefers whichever answer matches its own reading, so some ties are decided.
    assert win["wins"] + win["losses"] > decisive


def test_previous_run_as_baseline_and_win_rate_threshold(trained):
    project, _ = trained
    first = json.loads(ArtifactStore(project.artifacts).read("r1", "eval_report").files["eval_report.json"].read_text())
    project.edit_config("quality_gates", eval={"baseline": {"kind": "run", "run_id": "r1"},
                                               "online_win_rate_threshold": "previous_lower_bound", "blocking": False})
    project.new_run("r2")
    assert materialize(project, every_definition(project), "r2", teacher=teacher_gateway(project)).success
    report = json.loads(ArtifactStore(project.artifacts).read("r2", "eval_report").files["eval_report.json"].read_text())
    assert report["baseline"]["kind"] == "run:r1"
    assert report["baseline"]["accuracy"] == first["student"]["accuracy"]
    baseline = ArtifactStore(project.artifacts).read("r2", "baseline_model")  # a previous run: nothing trained
    assert baseline.frame.to_dicts() == [{"kind": "run"}] and baseline.files == {}
    # the same questions: paired with r1's student, question by question
    before = ArtifactStore(project.artifacts).read("r1", "eval_report").frame
    after = ArtifactStore(project.artifacts).read("r2", "eval_report").frame
    assert after["baseline_correct"].to_list() == before["student_correct"].to_list()
    paired = report["paired_comparison"]
    assert paired["applicable"] and paired["n"] == after.height
    assert paired["student_only"] == (after["student_correct"] & ~after["baseline_correct"]).sum()
    assert report["hard_gates"]["online_win_rate"]["threshold"] == \
        first["online_win_rate"]["online_win_rate_lower_bound"]
