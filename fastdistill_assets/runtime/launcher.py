"""Dagster's default run launcher, plus a run-worker health check for run monitoring.

Dagster's run monitoring (the daemon: ``dagster dev`` or ``dagster-daemon run``) marks a run
failed when its launcher reports the run worker dead, but the default launcher cannot tell.
This one can: the worker's pid is on the run's ``RUN_START`` event, and a process that is gone
(or a zombie, or a recycled pid) means the run can never finish. That covers runs the daemon
launched and runs started from the command line (``dagster asset materialize``) alike, on the
host they ran on: with a PostgreSQL instance shared by several hosts, a run is judged only where
its host tag says it lives. The
instance's ``dagster.yaml`` selects it (see :data:`fastdistill_assets.runtime.instance.DAGSTER_YAML`).
"""

from __future__ import annotations

import dagster as dg

# no public API has a launcher's health check or its launch context (dagster 1.13)
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

from fastdistill_assets.runtime.run_worker import (
    HOST_TAG,
    judged_here,
    run_worker,
    this_host,
    worker_alive,
)


class ProcessCheckingRunLauncher(dg.DefaultRunLauncher):
    """Launches like :class:`dagster.DefaultRunLauncher` (tagging the run with this host, where its
    worker runs); reports a dead run worker as FAILED."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {HOST_TAG: this_host()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not judged_here(self._instance, run):  # a pid means nothing on another host
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker on another host (or its host unknown)")
        worker = run_worker(self._instance, run.run_id)
        if worker is None:  # not started yet, or no pid recorded: nothing to judge, leave it running
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid recorded")
        if worker_alive(worker):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(worker.pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"run worker process {worker.pid} is gone (killed?); its steps stop with it",
            run_worker_id=str(worker.pid))


def end_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Run monitoring's verdict without the daemon: mark each started run whose worker is gone as
    failed and free its pool slots (a run killed under ``dagster asset materialize`` or
    ``fastdistill demo`` would otherwise hold the ``teacher`` pool's slot for ever). Only for an
    instance that uses this launcher, and only runs whose worker lives on this machine (see
    :func:`~fastdistill_assets.runtime.run_worker.judged_here`). Returns the ended runs' ids."""
    launcher = instance.run_launcher
    if not isinstance(launcher, ProcessCheckingRunLauncher):
        return []
    ended = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        health = launcher.check_run_worker_health(run)
        if health.status != WorkerStatus.FAILED:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is not None and current.status == dg.DagsterRunStatus.STARTED:
            instance.report_run_failed(current, f"Detected run worker status {health}. Marking run as failed.")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        ended.append(run.run_id)
    return ended
