"""The documented commands, run as a user would (subprocesses, the project's own instance)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import forkserver_steps, materialize_command

BIN = Path(sys.executable).parent


def _run(args, project, check=True):
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home")}
    return subprocess.run(args, env=env, capture_output=True, text=True, check=check, cwd=project.root)


def test_run_new_list_and_dagster_asset_materialize(project):
    project.edit_config("run_config", dataset={"limit_per_split": 10, "splits": ["train"]}, eval_split=None)
    out = _run([str(BIN / "fastdistill"), "run", "new", "cli-run"], project)
    assert "created run cli-run" in out.stdout
    assert (project.root / "home" / "dagster.yaml").exists()
    duplicate = _run([str(BIN / "fastdistill"), "run", "new", "cli-run"], project, check=False)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr
    bad = _run([str(BIN / "fastdistill"), "run", "new", "bad/name"], project, check=False)
    assert bad.returncode == 2 and "invalid run_id" in bad.stderr
    assert "cli-run" in _run([str(BIN / "fastdistill"), "run", "list"], project).stdout
    assert "status=never materialized" in _run([str(BIN / "fastdistill"), "run", "list"], project).stdout
    for command in (["--help"], ["serve", "--help"], ["demo", "--help"], ["run", "new", "--help"]):
        text = _run([str(BIN / "fastdistill"), *command], project).stdout
        assert "``" not in text
    serve_help = _run([str(BIN / "fastdistill"), "serve", "--help"], project).stdout
    assert "port to listen on (default: 8000)" in serve_help and "seed of the injected faults" in serve_help

    _run([str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
          "--select", "raw,canonical", "--partition", "cli-run"], project)
    assert ArtifactStore(project.artifacts).read("cli-run", "canonical").height == 10
    with dg.DagsterInstance.from_config(str(project.root / "home")) as instance:
        assert instance.get_dynamic_partitions("run_id") == ["cli-run"]
        assert instance.get_latest_materialization_event(dg.AssetKey("canonical")) is not None
        # Dagster's own command runs every step in its run worker by default, as `fastdistill materialize` does
        [run] = instance.get_runs()
        starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        assert len(starts) >= 6 and len({r.event_log_entry.dagster_event.pid for r in starts}) == 1


def _wait_for_group_exit(pgid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL is asynchronous: wait until no process of the group is left."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise TimeoutError(f"process group {pgid} still alive")


def test_materialization_killed_mid_teacher_stage_resumes_without_repeats(project):
    """SIGKILL `dagster asset materialize` during teacher_candidates, then run it again: the second
    run calls exactly the prompts whose answers had not come back (only the few in flight at the
    kill are asked twice), and the partition ends complete with no duplicate."""
    import signal
    import time

    from fastdistill_assets.teacher.cache import ResponseCache
    from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher

    project.edit_config("run_config", dataset={"limit_per_split": 160, "splits": ["train"]}, eval_split=None)
    project.edit_config("provider_gateway", defaults={"concurrency": 4})
    cache = project.artifacts / "_cache" / "responses.sqlite"
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
               "--select", "raw,canonical,teacher_candidates", "--partition", "killed", *forkserver_steps()]
    with embedded_teacher(FaultConfig(latency_ms=60)) as server:
        env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts),
               "FASTDISTILL_CONFIGS": str(project.configs), "DAGSTER_HOME": str(project.root / "home")}
        subprocess.run([str(BIN / "fastdistill"), "run", "new", "killed"], check=True, cwd=project.root,
                       env={**env, "FASTDISTILL_BASE_URL": server.base_url})  # frozen into the run
        proc = subprocess.Popen(command, env=env, cwd=project.root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and (not cache.exists() or len(ResponseCache(cache)) < 30):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _wait_for_group_exit(proc.pid)
        answered_before = len(ResponseCache(cache))
        calls_before = server.stats.total_calls
        subprocess.run(materialize_command("killed", "teacher_candidates", in_process=True), env=env,
                       cwd=project.root, check=True, capture_output=True)   # resume the teacher stage
    store = ArtifactStore(project.artifacts)
    n = store.read("killed", "canonical").height  # 159: the first 160 questions hold one exact duplicate
    assert 30 <= answered_before < n
    assert server.stats.total_calls - calls_before == n - answered_before
    assert len(server.stats.calls) == n
    assert sum(k - 1 for k in server.stats.calls.values()) <= 4  # at most the in-flight window
    frame = store.read("killed", "teacher_candidates")
    assert frame.height == n and frame["sample_id"].n_unique() == n
    assert frame["error"].null_count() == n
    assert frame["cache_hit"].sum() == answered_before


def test_distill_job_has_every_asset_and_check_and_runs_in_process_by_default():
    from fastdistill_assets.definitions import defs
    from fastdistill_assets.defs.jobs import MULTIPROCESS_RUN_CONFIG

    repo = defs.get_repository_def()
    job = defs.resolve_job_def("distill")
    assert job.partitions_def.name == "run_id"
    assert set(job.asset_layer.executable_asset_keys) == set(repo.asset_graph.get_all_asset_keys())
    assert set(job.asset_layer.asset_graph.asset_check_keys) == set(repo.asset_graph.asset_check_keys)
    assert len(repo.asset_graph.asset_check_keys) == 12
    schema = job.executor_def.config_schema.as_field()
    assert schema.default_value == {"in_process": {}}
    assert job.executor_def.get_requirements({"in_process": {}}) == []
    assert job.executor_def.get_requirements(MULTIPROCESS_RUN_CONFIG["execution"]["config"])  # needs a real instance


def _materialize(project, *args, check=True):
    return _run([str(BIN / "fastdistill"), "materialize", *args], project, check=check)


def test_fastdistill_materialize_prints_progress_and_summary_quietly(project):
    project.edit_config("run_config", dataset={"limit_per_split": 10})
    _run([str(BIN / "fastdistill"), "run", "new", "mat"], project)
    out = _materialize(project, "mat")
    lines = out.stdout.splitlines()
    materialized = [line.split()[1] for line in lines if line.startswith("materialized ")]
    assert sorted(materialized) == sorted(["raw", "canonical", "teacher_candidates", "filtered", "distilled",
                                           "student_model", "baseline_model", "eval_report"])
    assert any(line.startswith("materialized canonical ") and "rows=30" in line and line.endswith("s")
               for line in lines)
    assert "checks: 12 passed, 0 failed" in lines
    # the teacher's progress (not a terminal here: lines, no bar), from nothing asked to every answer
    progress = [line for line in lines if line.startswith("teacher: ")]
    assert progress[0].startswith("teacher: 0/10 answers (0.0%)") and progress[0].endswith("ETA unknown (no answer yet)")
    assert re.fullmatch(r"teacher: 10/10 answers \(100\.0%\), [\d.]+ answers/s, 0 errors, ETA done", progress[-1])
    # a few labels to look at: every question has gold here, so kept labels come from it
    examples = lines[lines.index("labels (a few; all in filtered, and in the UI's label_examples):") + 1:]
    assert examples[0].startswith("  kept (gold): ") and " -> SELECT " in examples[0]
    assert "| hard gate | value | op | threshold | verdict |" in lines  # the eval report
    assert lines[-1].startswith("run mat: succeeded")
    assert "DEBUG" not in out.stdout + out.stderr and "STEP_START" not in out.stdout + out.stderr
    with dg.DagsterInstance.from_config(str(project.root / "home")) as instance:
        runs = instance.get_runs()
        assert [(r.job_name, r.tags["dagster/partition"], r.is_success) for r in runs] == [("distill", "mat", True)]
        # the event log the console did not show is in the instance
        assert instance.get_records_for_run(runs[0].run_id, limit=1000).records
        # a sharded stage's time is its whole span (from its plan step's start), not its merge step's
        records = instance.get_records_for_run(runs[0].run_id, limit=10_000).records
        starts = {r.event_log_entry.dagster_event.step_key: r.event_log_entry.timestamp for r in records
                  if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.is_step_start}
        made = instance.get_latest_materialization_event(dg.AssetKey("teacher_candidates")).timestamp
        [shown] = [float(line.split()[-1].removesuffix("s")) for line in lines
                   if line.startswith("materialized teacher_candidates ")]
        assert shown == pytest.approx(made - starts["teacher_candidates.teacher_candidates_plan"], abs=0.1)
        assert made - starts["teacher_candidates.teacher_candidates_merge"] < shown
        report = json.loads(ArtifactStore(project.artifacts).read("mat", "eval_report").files["eval_report.json"]
                            .read_text())
    listed = _run([str(BIN / "fastdistill"), "run", "list"], project).stdout
    assert "status=success (" in listed
    assert f"accuracy={report['student']['accuracy']:.3f} baseline={report['baseline']['accuracy']:.3f}" in listed
    assert f"accepted={report['accepted']}" in listed
    # what the kept labels cost: the embedded teacher is priced (0.15 / 0.60 $ per million tokens)
    cost = report["label_cost"]
    assert cost["total_usd"] > 0 and f"cost_per_kept_sample=${cost['cost_per_kept_sample_usd']:.6f}" in listed
    assert any(line.startswith("teacher cost $") and "per kept sample" in line for line in lines)

    verbose = _materialize(project, "mat", "--select", "raw,canonical", "--verbose")
    assert "DEBUG" in verbose.stdout + verbose.stderr and "STEP_START" in verbose.stdout + verbose.stderr
    assert [line.split()[1] for line in verbose.stdout.splitlines() if line.startswith("materialized ")] == \
        ["raw", "canonical"]
    assert "checks: 0 passed, 0 failed" in verbose.stdout and "| hard gate |" not in verbose.stdout

    unknown = _materialize(project, "nope", check=False)
    assert unknown.returncode == 2 and "run 'nope' does not exist" in unknown.stderr
    bad_select = _materialize(project, "mat", "--select", "raw,bogus", check=False)
    assert bad_select.returncode == 2 and "unknown asset bogus" in bad_select.stderr


def test_fastdistill_materialize_failing_blocking_gate_exits_1_naming_the_check(project):
    project.edit_config("run_config", dataset={"limit_per_split": 10})
    project.edit_config("quality_gates", checks={"exec_pass_rate": {"op": ">=", "value": 1.01, "blocking": True}})
    _run([str(BIN / "fastdistill"), "run", "new", "impossible"], project)
    out = _materialize(project, "impossible", check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if line.startswith("check filtered.exec_pass_rate FAILED")]
    assert len(failed) == 1 and re.search(r"\(blocking\): value [01](\.\d+)?, must be >= 1\.01", failed[0]), failed
    # the checks on filtered ran, nothing after it did; the failed one is said once, above
    assert "checks: 8 passed, 1 failed (each said above)" in out.stdout
    assert "materialized distilled" not in out.stdout and "not run (" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("run impossible: FAILED")
    assert "Stack Trace" not in out.stderr  # the check's own line says it, not Dagster's traceback
