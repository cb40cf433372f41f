"""Materialize the whole pipeline for one run in the project's Dagster instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from fastdistill_assets.definitions import defs
from fastdistill_assets.settings import artifacts_dir
from fastdistill_assets.storage import ArtifactStore, StageOutput


def _report_summary(run_id: str) -> Path | None:
    """The eval_report.md of the current eval_report version of ``run_id``, or None if there is none."""
    try:
        report = ArtifactStore(artifacts_dir()).read(run_id, "eval_report")
    except FileNotFoundError:
        return None
    return report.files.get("eval_report.md") if isinstance(report, StageOutput) else None


def run_demo(run_id: str) -> int:
    """Materialize every asset and check for ``run_id``; print a summary. Returns an exit code."""
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(partition_key=run_id, instance=instance, raise_on_error=False)
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            count = mat.metadata.get("count")
            print(f"materialized {mat.asset_key.to_user_string():<20} rows={count.value if count else '-'}")
        for event in result.get_asset_check_evaluations():
            print(f"check {event.asset_key.to_user_string()}.{event.check_name}: "
                  f"{'passed' if event.passed else 'FAILED'}")
    summary = _report_summary(run_id)
    if summary:
        print()
        print(summary.read_text())
        print(f"\nreport: {summary}  (plots beside it; `make dev` for the Dagster UI)")
    print(f"run {run_id}: {'succeeded' if result.success else 'FAILED'}")
    return 0 if result.success else 1
