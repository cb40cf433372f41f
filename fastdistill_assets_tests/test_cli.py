"""The documented commands, run as a user would (subprocesses, the project's own instance)."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from fastdistill_assets.storage import ArtifactStore

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

    _run([str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
          "--select", "raw,canonical", "--partition", "cli-run"], project)
    assert ArtifactStore(project.artifacts).read("cli-run", "canonical").height == 10
    with dg.DagsterInstance.from_config(str(project.root / "home")) as instance:
        assert instance.get_dynamic_partitions("run_id") == ["cli-run"]
        assert instance.get_latest_materialization_event(dg.AssetKey("canonical")) is not None


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
               "--select", "raw,canonical,teacher_candidates", "--partition", "killed"]
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
        subprocess.run(command, env=env, cwd=project.root, check=True, capture_output=True)
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
