"""Sensors that alert, through the configured sinks (``AlertSinks``), on every failure.

* ``failed_check_alerts``: one alert per failed asset check evaluation. It walks finished runs
  (updated after its cursor, a timestamp) and reads their check evaluations, which works on
  every event log storage, run-sharded SQLite included.
* ``failed_run_alerts``: one alert per failed Dagster run (a step that raised: provider down,
  disk full, bad dataset path; or a run stopped by a blocking check). It monitors every run of
  the instance, the in-process ones started by ``fastdistill materialize``/``demo`` included.

A run that fails because of a blocking check therefore gives one ``check_failed`` alert per
failed check and one ``run_failed`` alert for the run; the run alert lists those checks as
"alerted separately", so the two are told apart and neither repeats the other's details.
"""

import datetime as dt

import dagster as dg

from fastdistill_assets.config import settings
from fastdistill_assets.defs.alerts import RUN_FAILED, Alert, AlertSinks

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def failed_check_alerts_since(instance: dg.DagsterInstance, cursor: float, limit: int = 100) -> tuple[list[Alert], float]:
    """Alerts for failed checks in runs finished after ``cursor``; returns (alerts, new cursor)."""
    after = dt.datetime.fromtimestamp(cursor, tz=dt.UTC)
    records = instance.get_run_records(dg.RunsFilter(statuses=FINISHED, updated_after=after), limit=limit,
                                       order_by="update_timestamp", ascending=True)
    alerts = []
    for record in records:
        cursor = max(cursor, record.update_timestamp.timestamp())
        for entry in instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data
            if evaluation.passed:
                continue
            alerts.append(Alert(
                asset=evaluation.asset_key.to_user_string(), check=evaluation.check_name,
                partition=evaluation.partition or record.dagster_run.tags.get("dagster/partition"),
                severity=evaluation.severity.value, description=evaluation.description,
                dagster_run_id=record.dagster_run.run_id,
                metadata={k: getattr(v, "value", str(v)) for k, v in evaluation.metadata.items()}))
    return alerts, cursor


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Send an alert for every failed asset check (sensor tick log, JSONL file, webhook).")
def failed_check_alerts(context: dg.SensorEvaluationContext, alerts: AlertSinks) -> dg.SkipReason:
    alerts_to_send, cursor = failed_check_alerts_since(context.instance, float(context.cursor or 0))
    for alert in alerts_to_send:
        alerts.send(alert, context.log)
    context.update_cursor(str(cursor))
    return dg.SkipReason(f"sent {len(alerts_to_send)} alert(s)")


def _failure_message(data) -> str | None:
    """The one-line reason of a STEP_FAILURE: a dg.Failure's description, else the user error's message."""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    if error is None:
        return None
    if getattr(data.error_source, "name", None) == "USER_CODE_ERROR" and error.cause is not None:
        error = error.cause  # the user's exception, not Dagster's "Error occurred while executing..." wrapper
    # ``message`` is Python's one-line summary ("module.Class: text"); keep it on one line
    return " ".join(error.message.removeprefix("dagster._core.errors.").split())


def run_failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, failure_event: dg.DagsterEvent | None,
                      step_failures: list[dg.DagsterEvent]) -> Alert:
    """The ``run_failed`` alert of a failed run: partition, failed steps, first error, where to look."""
    partition = run.tags.get("dagster/partition")
    first = step_failures[0] if step_failures else None
    error = _failure_message(first.event_specific_data) if first is not None else None
    if error is None and failure_event is not None:
        error = failure_event.message
    evaluations = [entry.dagster_event.event_specific_data
                   for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
    failed_checks = sorted({f"{e.asset_key.to_user_string()}.{e.check_name}" for e in evaluations if not e.passed})
    artifacts = settings.artifacts_dir() / partition if partition else None
    return Alert(asset=None, check=None, partition=partition, severity="ERROR",
                 description=f"Dagster run {run.run_id} of job {run.job_name} failed",
                 dagster_run_id=run.run_id, kind=RUN_FAILED,
                 failed_steps=list(dict.fromkeys(e.step_key for e in step_failures if e.step_key)),
                 error=error, failed_checks=failed_checks, ui_path=f"/runs/{run.run_id}",
                 artifacts_path=str(artifacts) if artifacts is not None and artifacts.exists() else None)


@dg.run_failure_sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
                       monitor_all_code_locations=True,
                       description="Send an alert for every failed run: the failed steps, the first error and "
                                   "where to look (sensor tick log, JSONL file, webhook).")
def failed_run_alerts(context: dg.RunFailureSensorContext, alerts: AlertSinks) -> None:
    alert = run_failure_alert(context.instance, context.dagster_run, context.failure_event,
                              list(context.get_step_failure_events()))
    alerts.send(alert, context.log)
