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
    project.edit_config("run_config", dataset={"limit_per_split": 10, "splits": ["train"]})
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
