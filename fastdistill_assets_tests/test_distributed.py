"""Shards on a distributed executor: Dagster's Celery executor with a real Redis broker, two Celery
workers started with Dagster's own command (`dagster-celery worker start`), and the instance in a
real PostgreSQL server, as a deployment over several machines would have them (here on loopback).
"""

import json
import os
import signal
import subprocess

import dagster as dg
import pytest

from fastdistill_assets.runtime.instance import POSTGRES_URL_ENV
from fastdistill_assets.runtime.run_worker import ancestors
from fastdistill_assets_tests.conftest import (
    BIN,
    SHARD_TEST_STAGES,
    assert_shards_equal_whole,
    wait_until,
    whole_run_then_four_shards,
)

pytest.importorskip("dagster_celery", reason="the `celery` extra is not installed")

BROKER_ENV = "FASTDISTILL_CELERY_BROKER"
CELERY = {"broker": {"env": BROKER_ENV}, "backend": {"env": BROKER_ENV}}


def test_four_shards_on_celery_workers_equal_one_in_process_run(project, postgres_server, redis_server, monkeypatch):
    """Same sample_ids, verdicts and distilled content_hash as the unsharded in-process run, with
    every row-wise stage split into 4 shard steps that ran in the two Celery workers' processes
    (none in the run worker), the instance in PostgreSQL."""
    url = postgres_server.fresh_database("instance_celery", "SELECT 1")
    monkeypatch.setenv(POSTGRES_URL_ENV, url)  # this test opens the instance too
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home"), POSTGRES_URL_ENV: url, BROKER_ENV: redis_server,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}   # dagster-celery starts `celery`
    whole_run_then_four_shards(project, env)
    (project.root / "worker.yaml").write_text(json.dumps({"execution": {"config": CELERY}}))
    workers, logs = [], []
    try:
        for name in ("w1", "w2"):
            log = project.root / f"{name}.log"
            logs.append(log)
            workers.append(subprocess.Popen(
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", "worker.yaml",
                 "-n", name, "--", "--concurrency=1"],
                env=env, cwd=project.root, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_until(lambda: all(" ready." in log.read_text() for log in logs), 120, "both Celery workers")
        run = subprocess.Popen([str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
                                "--select", SHARD_TEST_STAGES, "--partition", "sharded",
                                "--config-json", json.dumps({"execution": {"config": {"celery": CELERY}}})],
                               env=env, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out[-4000:] + "".join(log.read_text()[-2000:] for log in logs)

        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            steps = assert_shards_equal_whole(project, instance)
            [dagster_run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "sharded"}))
            step_pids = {r.event_log_entry.dagster_event.pid for r in instance.get_records_for_run(
                dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START).records}
            in_worker = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(
                dagster_run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=10_000).records
                if "in celery worker" in (r.event_log_entry.dagster_event.message or "")]
        # every step was handed to a Celery worker, both workers took some, and each step ran in a
        # process below one of the two workers started here, never in the run worker
        assert sorted(e.step_key for e in in_worker) == sorted(steps)
        assert {e.event_specific_data.metadata["Celery worker"].value.split("@")[0] for e in in_worker} == {"w1", "w2"}
        assert run.pid not in step_pids
        assert all(set(ancestors(pid)) & {w.pid for w in workers} for pid in step_pids), step_pids
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
