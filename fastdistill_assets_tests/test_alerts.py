"""Alerts for failed runs (a crashed step) and the eval plots shown in the UI."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from fastdistill_assets.defs.alerts import AlertSinks
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.sensors import failed_check_alerts, failed_run_alerts
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import (
    every_definition,
    materialize,
    teacher_gateway,
)


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    """A real HTTP server on 127.0.0.1 that records the JSON bodies posted to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


def _run_failure_context(project, result, sinks):
    return dg.build_run_status_sensor_context(
        sensor_name=failed_run_alerts.name, dagster_instance=project.instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"alerts": sinks}).for_run_failure()


def test_a_crashed_step_sends_one_run_alert_to_every_sink(project, tmp_path, webhook):
    url, received = webhook
    sinks = AlertSinks(jsonl_path=str(tmp_path / "alerts.jsonl"), webhook_url=url)

    def tick(cursor: str | None) -> str:
        """One evaluation of the sensor as the daemon runs it (cursor, run matching, resources)."""
        context = dg.build_sensor_context(instance=project.instance, cursor=cursor, resources={"alerts": sinks},
                                          repository_name="__repository__")
        failed_run_alerts.evaluate_tick(context)
        return context.cursor

    cursor = tick(None)  # the first tick starts at the end of the event log
    project.edit_config("run_config", dataset={"kind": "wikisql", "path": str(tmp_path / "moved"),
                                               "splits": ["train"]})
    project.new_run("crash")
    result = materialize(project, [raw, canonical], "crash", raise_on_error=False)  # in-process, as the CLI runs
    assert not result.success
    tick(tick(cursor))  # the failed run is alerted once; the next tick has nothing new

    [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
    alert = json.loads(line)
    run_id = result.dagster_run.run_id
    assert alert["kind"] == "run_failed" and alert["partition"] == "crash"
    assert alert["failed_steps"] == ["raw.raw_shard[shard_0]"] and alert["failed_checks"] == []
    assert "moved" in alert["error"]  # the dataset path that does not exist
    assert alert["dagster_run_id"] == run_id and alert["ui_path"] == f"/runs/{run_id}"
    [payload] = received
    text = payload["text"]
    assert "run failed for run_id crash" in text and "`raw.raw_shard[shard_0]`" in text and "moved" in text
    assert run_id in text and f"/runs/{run_id}" in text
    # the check sensor has nothing to say about this run: no failed check, no duplicate
    failed_check_alerts(dg.build_sensor_context(instance=project.instance, resources={"alerts": sinks}))
    assert len(received) == 1 and len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 1


def _eval_report_metadata(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events()
               if e.event_specific_data.materialization.asset_key == dg.AssetKey("eval_report")]
    return event.event_specific_data.materialization.metadata


def test_blocking_check_failure_alerts_once_per_check_and_once_for_the_run_and_plots_show_in_the_ui(
        project, tmp_path, webhook):
    url, received = webhook
    project.edit_config("run_config", dataset={"limit_per_split": 60}, training={"epochs": 2})
    project.edit_config("quality_gates", eval={"baseline": {"kind": "fixed", "value": 0.999}})
    project.new_run("strict")
    result = materialize(project, every_definition(project), "strict", teacher=teacher_gateway(project),
                         raise_on_error=False)
    assert not result.success

    # the plots: markdown images whose bytes are the stored PNG files
    metadata = _eval_report_metadata(result)
    stored = ArtifactStore(project.artifacts).read("strict", "eval_report").files
    for key, file in (("accuracy_plot", "accuracy.png"), ("reject_reasons_plot", "reject_reasons.png")):
        assert isinstance(metadata[key], dg.MarkdownMetadataValue)
        [encoded] = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata[key].value)
        assert base64.b64decode(encoded) == stored[file].read_bytes()

    # alerts: one per failed check (check_failed) and one for the run (run_failed), which names
    # the checks as alerted separately
    failed = sorted(f"{e.asset_key.to_user_string()}.{e.check_name}"
                    for e in result.get_asset_check_evaluations() if not e.passed)
    assert "eval_report.test_exec_accuracy_vs_baseline" in failed
    sinks = AlertSinks(jsonl_path=str(tmp_path / "alerts.jsonl"), webhook_url=url)
    failed_check_alerts(dg.build_sensor_context(instance=project.instance, resources={"alerts": sinks}))
    failed_run_alerts(_run_failure_context(project, result, sinks))
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["kind"] for a in alerts] == ["check_failed"] * len(failed) + ["run_failed"]
    assert sorted(f"{a['asset']}.{a['check']}" for a in alerts[:-1]) == failed
    run_alert = alerts[-1]
    assert run_alert["failed_checks"] == failed and run_alert["partition"] == "strict"
    assert run_alert["failed_steps"] == ["eval_report_hard_gates"]  # both hard gates run in one step
    assert run_alert["error"].startswith("DagsterAssetCheckFailedError: 1 blocking asset check failed")
    assert run_alert["artifacts_path"] == str(project.artifacts / "strict")
    assert len(received) == len(alerts)
    assert "alerted separately" in received[-1]["text"] and "test_exec_accuracy_vs_baseline" in received[-1]["text"]


def test_an_exception_in_a_step_alerts_with_its_message_not_dagsters_wrapper(project, tmp_path):
    @dg.asset(partitions_def=raw.partitions_def)
    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    project.new_run("full")
    result = dg.materialize([disk_full], partition_key="full", instance=project.instance, raise_on_error=False)
    assert not result.success
    sinks = AlertSinks(jsonl_path=str(tmp_path / "alerts.jsonl"))
    failed_run_alerts(_run_failure_context(project, result, sinks))
    [alert] = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert alert["failed_steps"] == ["disk_full"] and alert["partition"] == "full"
    assert alert["error"] == "OSError: [Errno 28] No space left on device"
