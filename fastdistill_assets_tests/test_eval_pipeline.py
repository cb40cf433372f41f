"""The whole pipeline through eval_report, hard gates, alerts, and the student served as a teacher."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import openai
import pytest

from fastdistill_assets.alerts import AlertSinks
from fastdistill_assets.assets.data import canonical, raw
from fastdistill_assets.assets.teacher import teacher_candidates
from fastdistill_assets.sensors import failed_check_alerts
from fastdistill_assets.storage import ArtifactStore
from fastdistill_assets.teacher.prompts import build_messages
from fastdistill_assets.training.serving import student_server
from fastdistill_assets_tests.conftest import ALL_ASSETS as ALL, materialize, teacher_gateway


def _small(project, **gates):
    project.edit_config("run_config", dataset={"limit_per_split": 120}, training={"epochs": 6})
    if gates:
        project.edit_config("quality_gates", **gates)


@pytest.fixture
def trained(project):
    _small(project)
    project.new_run("r1")
    result = materialize(project, ALL, "r1", teacher=teacher_gateway(project))
    return project, result


def test_all_seven_assets_and_hard_gates(trained):
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
    wins = (frame["student_correct"] & ~frame["teacher_correct"]).sum()
    assert report["online_win_rate"]["wins"] == wins
    assert set(report["hard_gates"]) == {"test_exec_accuracy_vs_baseline", "online_win_rate"}
    timing = report["timing"]
    assert set(timing["stages"]) >= {"raw", "teacher_candidates", "filtered", "student_model", "eval_report"}
    assert timing["teacher_tokens_per_sec"] > 0 and timing["train_tokens_per_sec"] > 0
    assert timing["pipeline_kept_samples_per_hour"] > 0
    assert out.files["accuracy.png"].read_bytes()[:4] == b"\x89PNG"
    assert "| hard gate |" in out.files["eval_report.md"].read_text()
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["test_exec_accuracy_vs_baseline"] == report["hard_gates"]["test_exec_accuracy_vs_baseline"]["passed"]
    model = ArtifactStore(project.artifacts).read("r1", "student_model")
    assert model.frame["used"][0] > 0 and (model.files["model"] / "weights.npz").exists()


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failing_hard_gate_blocks_and_fires_an_alert_to_the_webhook(project, tmp_path):
    _small(project, eval={"baseline": {"kind": "fixed", "value": 0.999}})
    project.new_run("strict")
    result = materialize(project, ALL, "strict", teacher=teacher_gateway(project), raise_on_error=False)
    assert not result.success
    checks = {e.check_name: (e.passed, e.severity.value) for e in result.get_asset_check_evaluations()}
    assert checks["test_exec_accuracy_vs_baseline"] == (False, "ERROR")

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
    result = materialize(project, ALL, "child", selection=[raw, canonical, teacher_candidates],
                         teacher=teacher_gateway(project))
    assert result.success
    candidates = ArtifactStore(project.artifacts).read("child", "teacher_candidates")
    assert candidates["error"].null_count() == candidates.height
    assert candidates["provider"].unique().to_list() == ["student"]
    assert candidates["raw_output"].str.starts_with("SELECT").all()


def test_judge_decides_win_rate_ties_when_configured(project):
    _small(project, judge={"enabled": True}, eval={"blocking": False})
    project.new_run("judged")
    assert materialize(project, ALL, "judged", teacher=teacher_gateway(project)).success
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
    assert materialize(project, ALL, "r2", teacher=teacher_gateway(project)).success
    report = json.loads(ArtifactStore(project.artifacts).read("r2", "eval_report").files["eval_report.json"].read_text())
    assert report["baseline"]["kind"] == "run:r1"
    assert report["baseline"]["accuracy"] == first["student"]["accuracy"]
    assert report["hard_gates"]["online_win_rate"]["threshold"] == \
        first["online_win_rate"]["online_win_rate_lower_bound"]
