"""The Dagster instance in PostgreSQL (``FASTDISTILL_POSTGRES_URL``): the documented commands keep
runs, events and schedules there, the managed dagster.yaml names the variable and never its value,
and a mistake in it is one line.

The concurrent and killed materializations on this instance are in test_run_safety.py (both
instance kinds); the writer lock's advisory-lock form in its lock tests."""

import os
import subprocess

import dagster as dg
import yaml

from fastdistill_assets.runtime.instance import MANAGED_HEADER, POSTGRES_URL_ENV
from fastdistill_assets.runtime.run_worker import HOST_TAG, this_host
from fastdistill_assets_tests.conftest import BIN, free_port

PASSWORD = "s3cret-instance-pw"


def _env(project, url: str | None) -> dict[str, str]:
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home")}
    env.pop(POSTGRES_URL_ENV, None)
    return env if url is None else {**env, POSTGRES_URL_ENV: url}


def test_the_distill_job_keeps_the_instance_in_postgres_and_never_writes_its_password(project, postgres_server,
                                                                                       monkeypatch):
    """`fastdistill run new` writes the managed dagster.yaml with PostgreSQL storage; `fastdistill
    materialize` (the distill job) runs every asset and check on it; the runs (tagged with their
    worker's host), events and dynamic partitions are in the database, no SQLite file under DAGSTER_HOME, and the password (in the
    URL, from the environment) is in no file, no output."""
    postgres_server.fresh_database("instance_distill", "SELECT 1")
    url = postgres_server.url("instance_distill").replace("fastdistill@", f"fastdistill:{PASSWORD}@")  # trust auth
    env = _env(project, url)
    project.edit_config("run_config", dataset={"limit_per_split": 10})
    made = subprocess.run([str(BIN / "fastdistill"), "run", "new", "pg"], env=env, cwd=project.root,
                          capture_output=True, text=True, check=True)
    home = project.root / "home"
    written = (home / "dagster.yaml").read_text()
    assert written.startswith(MANAGED_HEADER)
    assert yaml.safe_load(written)["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL_ENV}}}
    done = subprocess.run([str(BIN / "fastdistill"), "materialize", "pg"], env=env, cwd=project.root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "checks: 12 passed, 0 failed" in done.stdout and "run pg: succeeded" in done.stdout

    assert not list(home.rglob("*.db"))  # nothing of the instance in SQLite
    monkeypatch.setenv(POSTGRES_URL_ENV, url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.get_dynamic_partitions("run_id") == ["pg"]
        [run] = instance.get_runs()
        assert (run.job_name, run.tags["dagster/partition"], run.is_success) == ("distill", "pg", True)
        assert run.tags[HOST_TAG] == this_host()  # its worker's host: only checks there judge it by pid
        assert instance.get_latest_materialization_event(dg.AssetKey("eval_report")).run_id == run.run_id
    for path in [*home.rglob("*"), *project.artifacts.rglob("*")]:
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in made.stdout + made.stderr + done.stdout + done.stderr


def test_an_instance_url_that_is_not_postgres_is_refused_in_one_line(project):
    """A mistaken FASTDISTILL_POSTGRES_URL stops the command before anything is written, in one
    line that names the variable and not its value."""
    env = _env(project, "mysql://admin:hunter2@db/runs")
    out = subprocess.run([str(BIN / "fastdistill"), "run", "new", "bad"], env=env, cwd=project.root,
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"fastdistill: error: {POSTGRES_URL_ENV} must be a postgresql:// URL (the Dagster instance's database)"]
    assert "hunter2" not in out.stderr and not (project.root / "home" / "dagster.yaml").exists()


def test_an_instance_database_that_cannot_be_reached_is_one_line_and_saves_no_run(project):
    """Nothing listens on the URL's port: `fastdistill run new` says so in one line (no retries
    logged, no traceback, no password) and leaves no half-created run behind."""
    env = _env(project, f"postgresql://fastdistill:{PASSWORD}@127.0.0.1:{free_port()}/nowhere")
    out = subprocess.run([str(BIN / "fastdistill"), "run", "new", "unreached"], env=env, cwd=project.root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"fastdistill: error: {POSTGRES_URL_ENV}: the Dagster instance's database cannot be "
                           "reached: ") and "Connection refused" in line and PASSWORD not in line
    assert not project.registry.exists("unreached")
