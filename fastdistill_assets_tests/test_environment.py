"""The reference workflow's environment variables map onto the run and are frozen into it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdistill_assets.config.loading import (
    apply_environment,
    dataset_from_path,
    ollama_base_url,
)
from fastdistill_assets.datasets import wikisql
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.server import embedded_teacher
from fastdistill_assets_tests.wikisql_fixture import (
    OFFICIAL_TABLE,
    TABLE,
    write_official_wikisql,
    write_wikisql,
)

BIN = Path(sys.executable).parent
SECRET = "sk-or-env-test-0123456789"
QUESTIONS = [({"sel": 2, "agg": 0, "conds": [[0, 0, "Ana Silva"]]}, "What is the goals when player is Ana Silva?"),
             ({"sel": 0, "agg": 0, "conds": [[1, 0, "Lyon"]]}, "What is the player when team is Lyon?"),
             ({"sel": 2, "agg": 4, "conds": [[1, 0, "Porto"]]}, "What is the sum of goals when team is Porto?")]


@pytest.mark.parametrize("host, url", [
    ("http://localhost:11434", "http://localhost:11434/v1"), ("127.0.0.1:11434", "http://127.0.0.1:11434/v1"),
    ("https://ollama.example:443/v1/", "https://ollama.example:443/v1"), ("0.0.0.0", "http://0.0.0.0:11434/v1"),
    ("localhost", "http://localhost:11434/v1"),
])
def test_ollama_host_becomes_its_openai_compatible_url(host, url):
    assert ollama_base_url(host) == url


def test_provider_variables_apply_only_to_their_provider_and_generic_ones_win():
    data = {"teacher": {"provider": "embedded"}}
    assert apply_environment(data, {"OLLAMA_MODEL": "m"})[0]["teacher"] == {"provider": "embedded"}
    teacher = apply_environment(data, {"FASTDISTILL_PROVIDER": "ollama", "OLLAMA_MODEL": "m", "FASTDISTILL_MODEL": "g",
                                       "OPENROUTER_TIMEOUT": "5"})[0]["teacher"]
    assert teacher == {"provider": "ollama", "model": "g"}


def test_data_path_picks_the_dataset_kind(tmp_path):
    official = write_official_wikisql(tmp_path / "official", "train", [])
    (tmp_path / "own.jsonl").write_text("")
    (tmp_path / "bird").mkdir()
    cases = [({"path": str(official / "train.jsonl")}, {"kind": "wikisql", "path": str(official)}),
             ({"path": str(tmp_path / "own.jsonl")}, {"kind": "questions", "path": str(tmp_path / "own.jsonl")}),
             ({"path": str(official)}, {"kind": "wikisql", "path": str(official)}),
             ({"path": str(tmp_path / "bird")}, {"kind": "spider", "path": str(tmp_path / "bird")}),
             ({"kind": "wikisql", "path": str(tmp_path / "bird")}, {"kind": "wikisql", "path": str(tmp_path / "bird")})]
    for given, expected in cases:
        assert dataset_from_path(given) == expected


@pytest.fixture
def reference_layout(tmp_path) -> Path:
    """Files as the reference workflow's prepare script writes them: one questions file
    (instruction, schema, gold_sql, table_id, task_id) beside one WikiSQL database."""
    source = write_wikisql(tmp_path / "source", "train", [])
    folder = tmp_path / "wikisql_1k"
    folder.mkdir()
    (folder / "train.db").write_bytes((source / "train.db").read_bytes())
    schema = wikisql.schema_text(TABLE["id"], TABLE["header"], TABLE["types"])
    rows = [{"table_id": TABLE["id"], "schema": schema, "instruction": question, "task_id": f"wikisql-train-{i:06d}",
             "gold_sql": wikisql.wikisql_to_sql(TABLE["id"], sketch, TABLE["types"]), "system_prompt": "Return SQL only."}
            for i, (sketch, question) in enumerate(QUESTIONS)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _env(project, **variables) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTDISTILL_", "OLLAMA_", "OPENROUTER_"))}
    return {**env, "FASTDISTILL_CONFIGS": str(project.configs), "DAGSTER_HOME": str(project.root / "home"),
            **variables}


def test_reference_ollama_environment_is_frozen_and_used(project, reference_layout):
    project.edit_config("run_config", dataset={"splits": ["train"]}, eval_split=None)
    with embedded_teacher() as server:
        host = server.base_url.removeprefix("http://").removesuffix("/v1")  # Ollama's own host:port form
        env = _env(project, FASTDISTILL_PROVIDER="ollama", OLLAMA_MODEL="qwen2.5-coder:7b", OLLAMA_HOST=host,
                   OLLAMA_TIMEOUT="240", FASTDISTILL_LLM_BATCH_SIZE="3",
                   FASTDISTILL_DATA_PATH=str(reference_layout / "train.jsonl"),
                   FASTDISTILL_DB_PATH=str(reference_layout / "train.db"),
                   FASTDISTILL_ARTIFACTS_DIR=str(project.artifacts))
        created = subprocess.run([str(BIN / "fastdistill"), "run", "new", "ref-ollama"], env=env, cwd=project.root,
                                 capture_output=True, text=True)
        assert created.returncode == 0, created.stderr
        config = project.registry.load("ref-ollama").config
        assert config.teacher.model_dump() == {
            "provider": "ollama", "model": "qwen2.5-coder:7b", "splits": ["train"], "base_url": server.base_url,
            "timeout_s": 240.0, "concurrency": 3, "error_profile": None, "escalate": None, "budget_usd": None,
            "mode": "online", "batch_poll_s": 30.0}
        assert (config.dataset.kind, config.dataset.path, config.dataset.db_path) == (
            "questions", str(reference_layout / "train.jsonl"), str(reference_layout / "train.db"))
        # the steps run without any of those variables: they read the frozen run
        subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
                        "--select", "raw,canonical,teacher_candidates", "--partition", "ref-ollama"],
                       env=_env(project, FASTDISTILL_ARTIFACTS=str(project.artifacts)), cwd=project.root,
                       check=True, capture_output=True)
        assert server.stats.total_calls == len(QUESTIONS)
    store = ArtifactStore(project.artifacts)
    raw = store.read("ref-ollama", "raw")
    assert raw["reject_reason"].null_count() == len(QUESTIONS) and not any(raw["gold_empty"])
    assert raw["source_id"].to_list() == [f"wikisql-train-{i:06d}" for i in range(len(QUESTIONS))]
    assert set(raw["db_id"]) == {TABLE["id"]} and "-- Goals" in raw["schema"][0]
    assert json.loads(raw["sample_rows"][0]) == {"table_1_100_1": [[r[0], r[1], float(r[2])] for r in TABLE["rows"]]}
    candidates = store.read("ref-ollama", "teacher_candidates")
    assert set(candidates["model"]) == {"qwen2.5-coder:7b"} and candidates["error"].null_count() == len(QUESTIONS)


def test_reference_openrouter_environment_is_frozen_without_the_key(project, reference_layout):
    official = write_official_wikisql(project.root / "official", "train", [
        {"table_id": OFFICIAL_TABLE["id"], "question": "What is the points when hometown is São Paulo?",
         "sql": {"sel": 3, "agg": 0, "conds": [[1, 0, "São Paulo"]]}}])
    project.edit_config("run_config", dataset={"splits": ["train"]}, eval_split=None)
    template = (project.configs / "run_config.yaml").read_text()
    env = _env(project, FASTDISTILL_PROVIDER="openrouter", OPENROUTER_MODEL="deepseek/deepseek-v3.2",
               OPENROUTER_TIMEOUT="240", OPENROUTER_TEMPERATURE="0.2", OPENROUTER_MAX_TOKENS="128",
               FASTDISTILL_LLM_BATCH_SIZE="10", OPENROUTER_API_KEY=SECRET,
               FASTDISTILL_DATA_PATH=str(official / "train.jsonl"), FASTDISTILL_ARTIFACTS_DIR=str(project.artifacts))
    subprocess.run([str(BIN / "fastdistill"), "run", "new", "ref-openrouter"], env=env, cwd=project.root, check=True,
                   capture_output=True)
    config = project.registry.load("ref-openrouter").config
    assert (config.teacher.provider, config.teacher.model, config.teacher.timeout_s, config.teacher.concurrency) == (
        "openrouter", "deepseek/deepseek-v3.2", 240.0, 10)
    assert (config.decode.temperature, config.decode.max_tokens) == (0.2, 128)
    assert (config.dataset.kind, config.dataset.path) == ("wikisql", str(official))  # the official layout
    assert SECRET not in (project.artifacts / "ref-openrouter" / "run_config.json").read_text()
    no_key = subprocess.run([str(BIN / "fastdistill"), "run", "new", "no-key"], cwd=project.root, text=True,
                            env={k: v for k, v in env.items() if k != "OPENROUTER_API_KEY"}, capture_output=True)
    assert no_key.returncode == 2 and "needs an API key: set OPENROUTER_API_KEY" in no_key.stderr
    assert not project.registry.exists("no-key")
    assert (project.configs / "run_config.yaml").read_text() == template  # the environment never edits the file
