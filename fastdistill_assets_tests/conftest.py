"""Shared fixtures: an isolated project (artifacts, configs, Dagster instance) per test."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from fastdistill_assets.config.models import FrozenRun
from fastdistill_assets.config.registry import RunRegistry
from fastdistill_assets.defs.partitions import RUN_ID

BIN = Path(sys.executable).parent   # the environment's commands (dagster, fastdistill)
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GREEDY_DECODE = {"name": "greedy", "temperature": 0.0, "num_generations": 1}   # one answer per question
SINGLE_GREEDY = {"decode": GREEDY_DECODE,
                 "recipe": {"multi_decode_select": False}, "dataset": {"withhold_gold": {"share": 0.0}},
                 "teacher": {"error_profile": None}}   # the clean baseline teacher (exact counts)


@dataclass
class Project:
    root: Path
    artifacts: Path
    configs: Path
    instance: dg.DagsterInstance

    @property
    def registry(self) -> RunRegistry:
        return RunRegistry(self.artifacts, self.configs)

    def edit_config(self, name: str, **updates: dict) -> None:
        """Deep-merge ``updates`` into configs/<name>.yaml."""
        path = self.configs / f"{name}.yaml"
        data = yaml.safe_load(path.read_text()) or {}   # the shipped template is all comments
        _merge(data, updates)
        path.write_text(yaml.safe_dump(data))

    def new_run(self, run_id: str) -> FrozenRun:
        frozen = self.registry.create(run_id)
        self.instance.add_dynamic_partitions(RUN_ID, [run_id])
        return frozen


def _merge(base: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    artifacts, configs = tmp_path / "artifacts", tmp_path / "configs"
    shutil.copytree(REPO_CONFIGS, configs)
    monkeypatch.setenv("FASTDISTILL_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("FASTDISTILL_CONFIGS", str(configs))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    with dg.instance_for_test() as instance:
        project = Project(root=tmp_path, artifacts=artifacts, configs=configs, instance=instance)
        # Tests start from one greedy decode per question with every gold shown (fast, exact
        # counts); the tests that need the shipped sampled, partly unlabeled defaults ask for them.
        project.edit_config("run_config", **SINGLE_GREEDY)
        yield project


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastdistill_assets.datasets.demo import ensure_demo_dataset

    return ensure_demo_dataset(tmp_path_factory.mktemp("demo"))


def project_resources(project: Project, **extra) -> dict:
    from fastdistill_assets.defs.assets.sharding import STEP_IO
    from fastdistill_assets.defs.resources import RunConfigResource
    from fastdistill_assets.store.storage import ParquetIOManager

    return {
        "io_manager": ParquetIOManager(root=str(project.artifacts)),
        STEP_IO: dg.FilesystemIOManager(),
        "run_config": RunConfigResource(artifacts_dir=str(project.artifacts), configs_dir=str(project.configs)),
        **extra,
    }


def materialize(project: Project, assets: list, run_id: str, raise_on_error: bool = True, selection=None,
                **resources):
    """A real in-process ``dg.materialize`` of ``assets`` (or the ``selection`` of them) for one run_id."""
    return dg.materialize(assets, partition_key=run_id, instance=project.instance, selection=selection,
                          resources=project_resources(project, **resources), raise_on_error=raise_on_error)


def _all_assets() -> list:
    """The code location's assets and the checks declared from the shipped gate config."""
    from fastdistill_assets.config.loading import load_gates
    from fastdistill_assets.defs.build import project_assets
    from fastdistill_assets.defs.checks import build_asset_checks

    return [*project_assets(), *build_asset_checks(load_gates(REPO_CONFIGS / "quality_gates.yaml"))]


ALL_ASSETS = _all_assets()  # every asset and check


def every_definition(project: Project) -> list:
    """Every asset, and the checks declared from this project's gate config (as the code
    location declares them from configs/quality_gates.yaml when it loads)."""
    from fastdistill_assets.defs.checks import build_asset_checks

    assets = [a for a in ALL_ASSETS if not isinstance(a, dg.AssetChecksDefinition)]
    return [*assets, *build_asset_checks(project.registry.current_gates())]


def teacher_gateway(project: Project, **kwargs):
    """The provider gateway of an isolated project (embedded teacher, cache under its artifacts)."""
    from fastdistill_assets.teacher.gateway import ProviderGateway
    from fastdistill_assets.training.serving import StudentServers

    students = StudentServers(artifacts_dir=str(project.artifacts), configs_dir=str(project.configs))
    return ProviderGateway(config_path=str(project.configs / "provider_gateway.yaml"),
                           cache_path=str(project.artifacts / "_cache" / "responses.sqlite"),
                           **{"students": students, **kwargs})


def write_questions(path: Path, rows: list[dict], malformed_line: str | None = None) -> Path:
    """A questions file in the format its suffix names (.jsonl, .csv, .parquet)."""
    import json

    import polars as pl

    if path.suffix == ".jsonl":
        lines = [json.dumps(r) for r in rows] + ([malformed_line] if malformed_line else [])
        path.write_text("\n".join(lines) + "\n")
        return path
    columns = sorted({k for r in rows for k in r})
    frame = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows], schema={c: pl.String for c in columns})
    frame.write_csv(path) if path.suffix == ".csv" else frame.write_parquet(path)
    return path


def forkserver_steps() -> list[str]:
    """Arguments for `dagster asset materialize`: Dagster's multiprocess executor with its step
    processes forked from a forkserver that has the package loaded (a spawned step imports Dagster
    and the package anew, seconds per step). Still a process per step."""
    config = {"execution": {"config": {"multiprocess": {"start_method": {"forkserver": {
        "preload_modules": ["fastdistill_assets.definitions"]}}}}}}
    return ["--config-json", json.dumps(config)]


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def materialize_command(run_id: str, select: str = "raw,canonical,teacher_candidates",
                        in_process: bool = False) -> list[str]:
    """The documented `dagster asset materialize`; ``in_process``: every step in the command's
    own process (the project's default executor, said explicitly), else one process per step
    (Dagster's multiprocess executor, forked from a forkserver that has the package loaded),
    where a test needs steps in processes of their own."""
    executor = (["--config-json", json.dumps({"execution": {"config": {"in_process": {}}}})] if in_process
                else forkserver_steps())
    return [str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
            "--select", select, "--partition", run_id, *executor]


@dataclass(frozen=True)
class PostgresServer:
    """A real PostgreSQL server on loopback, started by the tests; ``url(dbname)`` as its superuser."""

    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://fastdistill@127.0.0.1:{self.port}/{dbname}"

    def fresh_database(self, name: str, sql: str) -> str:
        """The database ``name`` made anew (dropped first if there), ``sql`` run in it; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.url(name), autocommit=True) as db:
            db.execute(sql)
        return self.url(name)


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _postgres_bin() -> Path | None:
    import glob

    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)),
                                           None)
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL, ``initdb`` into a temporary folder and ``pg_ctl`` on a free loopback
    port (as the ``postgres`` user when the tests run as root, which initdb refuses); stopped
    and removed at the end of the session. Skipped where PostgreSQL is not installed."""
    import os
    import subprocess
    import tempfile

    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fastdistill-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fastdistill",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
        yield PostgresServer(port)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """Debian's ``redis-server`` on a free loopback port, in a temporary folder, nothing saved to
    disk; its URL. Skipped where Redis is not installed."""
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (Debian: apt-get install redis-server)")
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            with socket.socket() as conn:
                try:
                    conn.connect(("127.0.0.1", port))
                    conn.sendall(b"PING\r\n")
                    return conn.recv(16).startswith(b"+PONG")
                except OSError:
                    return False

        wait_until(answers, 20, "redis-server to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=30)


def instance_env(project: Project, postgres_url: str | None = None, **changes) -> dict[str, str]:
    """A Dagster home with the shipped dagster.yaml (``changes`` merged in, section by section;
    with ``postgres_url``, the PostgreSQL storage that FASTDISTILL_POSTGRES_URL selects), and the
    environment of a documented command that uses it."""
    import os

    from fastdistill_assets.runtime.instance import POSTGRES_URL_ENV, dagster_yaml

    environ = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts),
               "FASTDISTILL_CONFIGS": str(project.configs), "DAGSTER_HOME": str(project.root / "home")}
    environ.pop(POSTGRES_URL_ENV, None)
    if postgres_url is not None:
        environ[POSTGRES_URL_ENV] = postgres_url
    settings = yaml.safe_load(dagster_yaml(environ))
    for section, values in changes.items():
        settings[section] = values if values is None else {**settings.get(section, {}), **values}
    home = project.root / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({k: v for k, v in settings.items() if v is not None}))
    return environ


# --- a sharded run against the unsharded one (test_scale.py, test_distributed.py) -----------------

SHARD_TEST_STAGES = "raw,canonical,teacher_candidates,filtered,distilled"
SHARDED_STAGES = ("raw", "canonical", "teacher_candidates", "filtered")
VERDICTS = ["candidate_id", "sample_id", "cleaned_sql", "reject_reason", "kept", "gold_match", "agreement",
            "result_signature", "judge_score"]


def whole_run_then_four_shards(project: Project, env: dict[str, str]) -> None:
    """Materialize the run ``whole`` in process, unsharded (30 questions, some without gold, two
    sampled answers each, chunks of 4), then create the run ``sharded`` with 4 shards through
    `fastdistill run new` in ``env``, and remove the response cache so that it asks the teacher itself."""
    import subprocess

    project.edit_config("run_config", dataset={"limit_per_split": 30, "splits": ["train"],
                                               "withhold_gold": {"share": 0.3, "splits": ["train"]}},
                        decode={"num_generations": 2, "temperature": 0.4, "name": "sampled"},
                        scale={"chunk_rows": 4}, eval_split=None)
    project.new_run("whole")
    assert materialize(project, ALL_ASSETS, "whole", selection=SHARD_TEST_STAGES.split(","),
                       teacher=teacher_gateway(project)).success
    project.edit_config("run_config", scale={"chunk_rows": 4, "shards": 4})
    subprocess.run([str(BIN / "fastdistill"), "run", "new", "sharded"], env=env, cwd=project.root, check=True,
                   capture_output=True)
    for cache_file in (project.artifacts / "_cache").glob("responses.sqlite*"):
        cache_file.unlink()


def assert_shards_equal_whole(project: Project, instance: dg.DagsterInstance) -> list[str]:
    """The run ``sharded`` (its Dagster run in ``instance``) equals ``whole``: same verdicts, the
    same raw, canonical and distilled content_hash, 4 shard steps per sharded stage that made every
    part, and no cached teacher answer. Returns the sharded Dagster run's step keys."""
    from fastdistill_assets.store.storage import ArtifactStore

    store = ArtifactStore(project.artifacts)
    whole, sharded = (store.read(run, "filtered").frame.sort("candidate_id") for run in ("whole", "sharded"))
    assert whole.height == sharded.height > 0
    assert whole.select(VERDICTS).equals(sharded.select(VERDICTS))
    assert 0 < whole["kept"].sum() < whole.height and whole["gold_sql"].null_count() > 0  # both paths, both verdicts
    for stage in ("raw", "canonical", "distilled"):
        assert store.scan("whole", stage).manifest["content_hash"] == store.scan("sharded", stage).manifest["content_hash"]
    [run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "sharded"}))
    steps = [s.step_key for s in instance.get_run_step_stats(run.run_id)]
    for stage in SHARDED_STAGES:
        metadata = instance.get_latest_materialization_event(dg.AssetKey(stage)).asset_materialization.metadata
        assert sorted(s for s in steps if s.startswith(f"{stage}.{stage}_shard")) == [
            f"{stage}.{stage}_shard[shard_{k}]" for k in range(4)]
        assert metadata["parts_made_by_merge"].value == 0  # the shards made every part
        assert metadata["shards"].value == 4 and metadata["chunks"].value >= 4
        if stage == "teacher_candidates":
            assert metadata["cache_hits"].value == 0
    return steps
