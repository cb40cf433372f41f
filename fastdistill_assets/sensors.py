"""A sensor that alerts on every failed asset check, through the configured sinks.

It walks finished runs (updated after its cursor, a timestamp) and reads their check
evaluations, which works on every event log storage, run-sharded SQLite included.
"""

import datetime as dt

import dagster as dg

from fastdistill_assets.alerts import Alert, AlertSinks

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def failed_check_alerts_since(instance: dg.DagsterInstance, cursor: float, limit: int = 100) -> tuple[list[Alert], float]:
    """Alerts for failed checks in runs finished after ``cursor``; returns (alerts, new cursor)."""
    after = dt.datetime.fromtimestamp(cursor, tz=dt.timezone.utc)
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
           description="Send an alert for every failed asset check (run log, JSONL file, webhook).")
def failed_check_alerts(context: dg.SensorEvaluationContext, alerts: AlertSinks) -> dg.SkipReason:
    alerts_to_send, cursor = failed_check_alerts_since(context.instance, float(context.cursor or 0))
    for alert in alerts_to_send:
        alerts.send(alert, context.log)
    context.update_cursor(str(cursor))
    return dg.SkipReason(f"sent {len(alerts_to_send)} alert(s)")
