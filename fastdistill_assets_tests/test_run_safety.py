"""One writer per run, killed runs end, and the instance settings that make it so.

The lock and liveness helpers are tested directly; the rest runs the documented commands
(`fastdistill run new`, `dagster asset materialize`, `dagster-daemon run`) as subprocesses
against a real local teacher server."""

import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
import yaml

from fastdistill_assets.runtime.instance import DAGSTER_YAML
from fastdistill_assets.runtime.launcher import ProcessCheckingRunLauncher
from fastdistill_assets.runtime.locks import RunWriterLock, describe_holder
from fastdistill_assets.runtime.run_worker import (
    HOST_TAG,
    process_alive,
    run_worker,
    this_host,
)
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import (
    BIN,
    instance_env,
    materialize,
    materialize_command,
    wait_until,
)

# --- the writer lock and process liveness, directly ----------------------------------------------------------

@pytest.fixture(params=["flock", "postgres"])
def lock_db(request) -> str | None:
    """None: the file lock of one host; else the URL of a PostgreSQL database (a Dagster
    instance's), whose advisory lock holds across hosts."""
    return None if request.param == "flock" else request.getfixturevalue("postgres_server").url()


def test_a_run_has_one_writer_and_other_runs_are_free(tmp_path, lock_db):
    first, second = RunWriterLock(tmp_path, "run-a", lock_db), RunWriterLock(tmp_path, "run-a", lock_db)
    assert first.acquire({"dagster_run_id": "dagster-run-1"})
    assert not second.acquire({"dagster_run_id": "dagster-run-2"})
    assert second.holder()["dagster_run_id"] == "dagster-run-1" and second.holder()["pid"] == os.getpid()
    assert describe_holder(second.holder()).startswith(
        f"Dagster run dagster-run-1, pid {os.getpid()} on {os.uname().nodename}, since ")
    other_run = RunWriterLock(tmp_path, "run-b", lock_db)
    assert other_run.acquire({})
    first.release()
    assert second.acquire({"dagster_run_id": "dagster-run-2"})
    assert first.holder()["dagster_run_id"] == "dagster-run-2"
    second.release()
    other_run.release()
    if lock_db is not None:  # released means released on the server: nothing of ours is left there
        import psycopg

        with psycopg.connect(lock_db, autocommit=True) as conn:
            wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                            "'fastdistill writer %%'").fetchone() == (0,), 5, "the lock's connections to end")


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, lock_db):
    code = ("import sys, time; from pathlib import Path; from fastdistill_assets.runtime.locks import RunWriterLock; "
            "lock = RunWriterLock(Path(sys.argv[1]), 'r', sys.argv[2] or None); assert lock.acquire({}); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), lock_db or ""], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = RunWriterLock(tmp_path, "r", lock_db)
    assert not lock.acquire({})
    holder.kill()
    holder.wait()
    # the kernel drops the dead holder's flock; the server, its connection's advisory lock
    wait_until(lambda: lock.acquire({}), 10, "the dead holder's lock to be dropped")
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


def test_a_step_whose_run_is_being_written_elsewhere_retries_without_blocking(project):
    """The step does not block on the lock (it would keep its pool slot): it is retried, says
    who holds the run, and goes on once the holder is done."""
    import threading

    from fastdistill_assets.defs.assets.data import raw
    from fastdistill_assets.defs.resources import RunConfigResource

    project.edit_config("run_config", dataset={"limit_per_split": 5, "splits": ["train"]}, eval_split=None)
    project.new_run("busy")
    holder = RunWriterLock(project.artifacts, "busy")
    assert holder.acquire({"dagster_run_id": "the-other-run"})
    threading.Timer(1.5, holder.release).start()
    resource = RunConfigResource(artifacts_dir=str(project.artifacts), configs_dir=str(project.configs),
                                 writer_retry_s=0.5)
    result = materialize(project, [raw], "busy", run_config=resource)
    assert result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) >= 2
    logs = project.instance.all_logs(result.run_id)
    assert any("is being materialized elsewhere (Dagster run the-other-run" in (e.user_message or "") for e in logs)

    holder = RunWriterLock(project.artifacts, "busy")
    assert holder.acquire({"dagster_run_id": "the-other-run"})
    impatient = RunConfigResource(artifacts_dir=str(project.artifacts), configs_dir=str(project.configs),
                                  writer_retry_s=0.2, writer_wait_s=0.4)
    result = materialize(project, [raw], "busy", run_config=impatient, raise_on_error=False)
    holder.release()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_failure_data.user_failure_data.description == (
        "run 'busy' is being materialized elsewhere (Dagster run the-other-run, pid "
        f"{os.getpid()} on {os.uname().nodename}, since {time.strftime('%H:%M:%S', time.localtime(holder.holder()['since']))}); "
        "waited 0.4s (writer_wait_s): let it finish or cancel it, then materialize again")


def test_process_alive_sees_exits_zombies_and_recycled_pids():
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: not process_alive(child.pid), 10, "the child to exit")  # a zombie until reaped
    child.wait()
    assert not process_alive(child.pid)
    # a pid whose process started after the given time is a different process than the one we knew
    assert not process_alive(os.getpid(), started_before=time.time() - 3600 * 24 * 365)


def test_launcher_reports_a_run_whose_worker_is_gone_as_failed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    code = ("import dagster as dg\n@dg.asset\ndef a():\n    return 1\n"
            "with dg.DagsterInstance.get() as i:\n    print(dg.materialize([a], instance=i).run_id)")
    dead_run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True).stdout.strip().splitlines()[-1]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, ProcessCheckingRunLauncher) and launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled
        run = instance.get_run_by_id(dead_run)
        worker = run_worker(instance, dead_run)
        assert worker is not None and worker.pid != os.getpid()
        health = launcher.check_run_worker_health(run)
        assert health.status.value == "FAILED" and f"process {worker.pid} is gone" in health.msg
        # a run whose worker lives on another host is not judged by a pid here (a shared instance)
        instance.add_run_tags(dead_run, {HOST_TAG: "another-host/boot-id"})
        health = launcher.check_run_worker_health(instance.get_run_by_id(dead_run))
        assert health.status.value == "RUNNING" and "another host" in health.msg
        instance.add_run_tags(dead_run, {HOST_TAG: this_host()})
        assert launcher.check_run_worker_health(instance.get_run_by_id(dead_run)).status.value == "FAILED"

        @dg.asset
        def b(context: dg.AssetExecutionContext) -> int:
            health = launcher.check_run_worker_health(instance.get_run_by_id(context.run.run_id))
            context.add_output_metadata({"health": health.status.value})
            return 1

        result = dg.materialize([b], instance=instance)
        metadata = result.asset_materializations_for_node("b")[0].metadata
        assert metadata["health"].value == "RUNNING"  # this process is that run's worker, alive


def test_a_step_whose_run_worker_is_not_its_ancestor_starts_no_watcher_and_tags_nothing(tmp_path):
    """A Celery worker's step, or one on another machine: its run worker's pid means nothing to
    it, so it neither watches that pid (it could end a live run's step) nor tags the run with its
    own host."""
    from fastdistill_assets.runtime.run_worker import stop_step_with_run_worker

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    code = ("import time, dagster as dg\n@dg.asset\ndef a():\n    return 1\n"
            "with dg.DagsterInstance.get() as i:\n    print(dg.materialize([a], instance=i).run_id, flush=True)\n"
            "time.sleep(60)")
    worker = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "DAGSTER_HOME": str(home)},
                              stdout=subprocess.PIPE, text=True)
    try:
        run_id = worker.stdout.readline().strip().splitlines()[-1]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert run_worker(instance, run_id).pid == worker.pid and process_alive(worker.pid)
            assert stop_step_with_run_worker(instance, run_id) is False
            assert HOST_TAG not in instance.get_run_by_id(run_id).tags
    finally:
        worker.kill()
        worker.wait()


def test_shipped_instance_settings_queue_runs_per_run_id_and_pool_the_teacher(tmp_path):
    from fastdistill_assets.definitions import defs

    settings = yaml.safe_load(DAGSTER_YAML)
    assert settings["run_launcher"]["class"] == ProcessCheckingRunLauncher.__name__
    assert settings["run_monitoring"]["enabled"] is True
    assert settings["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert settings["concurrency"]["pools"]["default_limit"] == 1
    def pools(node) -> set[str]:  # a sharded stage is a graph: its pools are its ops'
        ops = node.iterate_op_defs() if isinstance(node, dg.GraphDefinition) else [node]
        return {op.pool for op in ops if op.pool}

    assert {k.to_user_string(): pools(defs.resolve_assets_def(k).node_def) for k in defs.resolve_all_asset_keys()} == {
        "raw": set(), "canonical": set(), "teacher_candidates": {"teacher"}, "filtered": {"teacher"},
        "distilled": set(), "student_model": set(), "baseline_model": set(), "eval_report": {"teacher"}}


# --- the documented commands ------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def instance_db(request, monkeypatch) -> str | None:
    """The Dagster instance's storage: None for the SQLite files under DAGSTER_HOME, else the URL
    of a fresh PostgreSQL database (FASTDISTILL_POSTGRES_URL, set here too so that the test opens
    the same instance)."""
    from fastdistill_assets.runtime.instance import POSTGRES_URL_ENV

    if request.param == "sqlite":
        monkeypatch.delenv(POSTGRES_URL_ENV, raising=False)
        return None
    url = request.getfixturevalue("postgres_server").fresh_database("dagster_instance", "SELECT 1")
    monkeypatch.setenv(POSTGRES_URL_ENV, url)
    return url


def _new_run(run_id: str, env: dict[str, str], project, base_url: str) -> None:
    subprocess.run([str(BIN / "fastdistill"), "run", "new", run_id], check=True, cwd=project.root,
                   env={**env, "FASTDISTILL_BASE_URL": base_url}, capture_output=True)


def test_two_materializations_of_one_run_call_the_teacher_once(project, instance_db):
    """The second (its teacher step alone) starts while the first is in its teacher step (20 s):
    it waits for the first's writer lock, says so, and its own teacher step is all cache hits.
    The teacher pool is lifted here so that the lock alone is what serializes them."""
    from fastdistill_assets.teacher.cache import ResponseCache
    from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher

    project.edit_config("run_config", dataset={"limit_per_split": 80, "splits": ["train"]}, eval_split=None)
    project.edit_config("provider_gateway", defaults={"concurrency": 2})
    env = instance_env(project, instance_db, concurrency={"pools": {}})
    cache = project.artifacts / "_cache" / "responses.sqlite"
    with embedded_teacher(FaultConfig(latency_ms=500)) as server:  # 20 s of teacher: the second comes during it
        _new_run("twice", env, project, server.base_url)
        first = subprocess.Popen(materialize_command("twice"), env=env, cwd=project.root, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(lambda: cache.exists() and len(ResponseCache(cache)) >= 4, 180, "the first's teacher step")
        second = subprocess.run(materialize_command("twice", "teacher_candidates"), env=env, cwd=project.root,
                                text=True, capture_output=True, timeout=300)
        first_log = first.communicate(timeout=300)[0]
    assert (first.returncode, second.returncode) == (0, 0), (first_log[-3000:], second.stdout[-6000:], second.stderr[-3000:])
    n = ArtifactStore(project.artifacts).read("twice", "canonical").height
    assert len(server.stats.calls) == n and server.stats.total_calls == n  # each prompt asked once
    assert "is being materialized elsewhere" in second.stdout + second.stderr
    frame = ArtifactStore(project.artifacts).read("twice", "teacher_candidates")
    assert frame.height == n and frame["sample_id"].n_unique() == n and frame["cache_hit"].all()
    if instance_db is not None:  # both runs were recorded in PostgreSQL, none in SQLite files
        assert not list((project.root / "home").rglob("*.db"))
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "twice"}))
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2


def test_killed_materialization_is_marked_failed_and_its_step_stops(project, instance_db):
    """SIGKILL only the `dagster asset materialize` process (not its group) in the teacher step:
    the step process stops by itself, run monitoring marks the run failed, and a re-run completes
    from the response cache with every sample once."""
    from fastdistill_assets.teacher.cache import ResponseCache
    from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher

    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"]}, eval_split=None)
    project.edit_config("provider_gateway", defaults={"concurrency": 4})  # 40 answers take 4 s: 4 at a time
    env = instance_env(project, instance_db, run_monitoring={"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 1})
    cache = project.artifacts / "_cache" / "responses.sqlite"
    with embedded_teacher(FaultConfig(latency_ms=400)) as server:
        _new_run("killed", env, project, server.base_url)
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "fastdistill_assets.definitions"],
                                  env=env, cwd=project.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            proc = subprocess.Popen(materialize_command("killed"), env=env, cwd=project.root,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: cache.exists() and len(ResponseCache(cache)) >= 12, 180, "teacher answers")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                run = instance.get_runs(limit=1)[0]
                step_pids = {r.event_log_entry.dagster_event.pid for r in instance.get_records_for_run(
                    run.run_id, of_type=dg.DagsterEventType.STEP_START).records}
                assert step_pids and proc.pid not in step_pids  # the steps ran in processes of their own
                wait_until(lambda: not any(process_alive(pid) for pid in step_pids), 3, "the step process to stop")
                calls_after_stop = server.stats.total_calls
                time.sleep(1.0)
                assert server.stats.total_calls == calls_after_stop  # nobody left calling the teacher
                wait_until(lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
                            120, "run monitoring to mark the run failed")
                failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
                assert "is gone" in failure[0].event_log_entry.dagster_event.message
            answered_before = len(ResponseCache(cache))
            subprocess.run(materialize_command("killed", "teacher_candidates", in_process=True), env=env,
                           cwd=project.root, check=True, capture_output=True, timeout=300)  # resume the teacher
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=60)
    store = ArtifactStore(project.artifacts)
    n = store.read("killed", "canonical").height
    assert answered_before < n
    frame = store.read("killed", "teacher_candidates")
    assert frame.height == n and frame["sample_id"].n_unique() == n and frame["error"].null_count() == n
    assert frame["cache_hit"].sum() == answered_before
    assert len(server.stats.calls) == n
    assert sum(k - 1 for k in server.stats.calls.values()) <= 4  # at most the in-flight window at the kill


def test_a_killed_teacher_step_resumes_from_the_chunks_it_finished(project):
    """Chunks of 4 samples: SIGKILL the whole materialization once 3 chunks are written. With the
    response cache deleted, only the finished chunks can spare teacher calls: the re-run asks
    for exactly the other samples, and the stage has every sample once."""
    import polars as pl

    from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher

    project.edit_config("run_config", dataset={"limit_per_split": 40, "splits": ["train"]}, eval_split=None,
                        scale={"chunk_rows": 4})
    project.edit_config("provider_gateway", defaults={"concurrency": 2})
    env = instance_env(project)
    spool = project.artifacts / "resume" / "_work" / "teacher_candidates"
    with embedded_teacher(FaultConfig(latency_ms=150)) as server:
        _new_run("resume", env, project, server.base_url)
        proc = subprocess.Popen(materialize_command("resume", in_process=True), env=env, cwd=project.root, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: len(list(spool.glob("*/part-*.json"))) >= 3, 180, "three finished chunks")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = pl.concat([pl.read_parquet(p.with_suffix(".parquet")) for p in spool.glob("*/part-*.json")])
        calls_before = server.stats.total_calls
        for cache_file in (project.artifacts / "_cache").glob("responses.sqlite*"):
            cache_file.unlink()
        subprocess.run(materialize_command("resume", in_process=True), env=env, cwd=project.root, check=True, capture_output=True,
                       timeout=300)
    store = ArtifactStore(project.artifacts)
    n = store.read("resume", "canonical").height
    frame = store.read("resume", "teacher_candidates")
    assert 3 * 4 <= finished.height < n
    assert frame.height == n and frame["candidate_id"].n_unique() == n
    assert server.stats.total_calls - calls_before == n - finished.height
    kept = frame.join(finished.select("candidate_id", "raw_output"), on="candidate_id")
    assert kept.height == finished.height and (kept["raw_output"] == kept["raw_output_right"]).all()
    assert not list(spool.rglob("part-*"))  # published: the spool is cleared


def test_a_step_waits_for_another_step_of_its_own_run_without_calling_it_elsewhere(project):
    """Steps of one Dagster run in processes of their own (the multiprocess executor) take the
    run's writer lock in turn: the later one waits in place, saying so, with no retry."""
    import threading
    import uuid

    from fastdistill_assets.defs.assets.data import raw
    from fastdistill_assets_tests.conftest import project_resources

    project.edit_config("run_config", dataset={"limit_per_split": 5, "splits": ["train"]}, eval_split=None)
    project.new_run("mine")
    dagster_run = str(uuid.uuid4())
    holder = RunWriterLock(project.artifacts, "mine")
    assert holder.acquire({"dagster_run_id": dagster_run})   # as a step of this run in another process would

    def release_once_waited_for() -> None:  # not on a timer: a slow start must not find the lock free already
        try:
            wait_until(lambda: any("waiting for another step" in (e.user_message or "")
                                   for e in project.instance.all_logs(dagster_run)), 60, "the step to wait")
        finally:
            holder.release()

    threading.Thread(target=release_once_waited_for).start()
    job = dg.Definitions(assets=[raw], resources=project_resources(project)).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=project.instance, partition_key="mine", run_id=dagster_run)
    assert result.success
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    said = [e.user_message for e in project.instance.all_logs(dagster_run) if e.user_message]
    assert not any("elsewhere" in line for line in said)
    assert any(f"run 'mine': waiting for another step of this Dagster run to finish writing (Dagster run "
               f"{dagster_run}, pid {os.getpid()}" in line for line in said)
