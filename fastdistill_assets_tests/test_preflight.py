"""User mistakes are refused before anything runs: one line naming the file, key or variable,
exit code 2, no traceback, and nothing written for the run (artifacts or Dagster instance)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastdistill_assets import cli
from fastdistill_assets.defs.assets.data import raw
from fastdistill_assets_tests.conftest import materialize, write_questions
from fastdistill_assets_tests.db_fixtures import make_shop

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def cli_home(project, monkeypatch):
    """The CLI's own Dagster instance folder (not created until a run is)."""
    monkeypatch.setenv("DAGSTER_HOME", str(project.root / "cli-home"))


def _refused(project, capsys, run_id: str = "bad-run", *args: str) -> str:
    """Run `fastdistill run new` in-process; assert it refused cleanly and wrote nothing."""
    home = Path(os.environ["DAGSTER_HOME"])
    code = cli.main(["run", "new", run_id, *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith("fastdistill: error: ") and err.count("\n") == 1
    assert not (project.artifacts / run_id).exists()
    assert not home.exists()  # the instance was not even created
    return err.removeprefix("fastdistill: error: ").strip()


@pytest.fixture
def shop_file(project):
    make_shop(project.root / "shop.sqlite")
    rows = [{"question": f"What is the total amount when year is {2000 + i}?", "db_path": "shop.sqlite",
             "gold_sql": f"SELECT SUM(amount) FROM sales WHERE year = {2000 + i}", "split": split}
            for i, split in enumerate(["train"] * 6 + ["test"] * 3)]
    return write_questions(project.root / "questions.jsonl", rows)


@pytest.mark.parametrize("edits, env, expected", [
    ({"dataset": {"kind": "wikisql", "path": "/no/such/folder"}}, {},
     "dataset: WikiSQL split 'train' needs /no/such/folder/train.jsonl"),
    ({"teacher": {"provider": "nope"}}, {}, "unknown provider 'nope': provider_gateway.yaml has embedded, embedded_strong, ollama, "),
    ({"teacher": {"escalate": {"provider": "nope"}}}, {},
     "teacher.escalate.provider: unknown provider 'nope': provider_gateway.yaml has "),
    ({"teacher": {"escalate": {"provider": "openai"}}}, {},
     "teacher.escalate.provider: provider 'openai' needs an API key: set OPENAI_API_KEY (or FASTDISTILL_API_KEY)"),
    ({"teacher": {"escalate": {"provider": "student"}}}, {},
     "teacher.escalate.provider 'student' cannot be an escalation teacher"),
    ({"teacher": {"escalate": {"model": "gpt-4o"}}}, {}, "{file}: teacher.escalate.provider: Field required"),
    ({"teacher": {"provider": "openrouter"}}, {},
     "provider 'openrouter' needs an API key: set OPENROUTER_API_KEY (or FASTDISTILL_API_KEY)"),
    ({"teacher": {"provider": "ollama", "budget_usd": 5}}, {},
     "teacher.budget_usd needs prices: provider 'ollama' has no price_in_per_mtok / price_out_per_mtok"),
    ({"teacher": {"budget_usd": -1}}, {}, "{file}: teacher.budget_usd: "),
    ({"dataset": {"splits": ["train", "dev"]}}, {},
     "eval_split 'test' is not among dataset.splits ['train', 'dev']: name one of them, or eval_split: null"),
    ({}, {"FASTDISTILL_CONCURRENCY": "lots"},
     "{file}: FASTDISTILL_CONCURRENCY='lots' sets teacher.concurrency: Input should be a valid integer"),
    ({"teacher": {"concurrency": 0}}, {},
     "{file}: teacher.concurrency: Input should be greater than or equal to 1 (got 0)"),
    ({"decode": {"max_tokens": -5}}, {}, "{file}: decode.max_tokens: Input should be greater than or equal to 1 (got -5)"),
    ({"decode": {"num_generations": 0}}, {},
     "{file}: decode.num_generations: Input should be greater than or equal to 1 (got 0)"),
    ({"dataset": {"sample_rowz": 3}}, {}, "{file}: dataset.sample_rowz: Extra inputs are not permitted"),
    ({"teacher": {"splits": ["train", "tarin"]}}, {},
     "teacher.splits names 'tarin', which is not among dataset.splits ['train', 'dev', 'test']"),
    ({"dataset": {"withhold_gold": {"share": 0.5, "splits": ["trian"]}}}, {},
     "dataset.withhold_gold.splits names 'trian', which is not among dataset.splits"),
    ({}, {"OPENROUTER_TIMEOUT": "-1", "FASTDISTILL_PROVIDER": "openrouter", "OPENROUTER_API_KEY": "k"},
     "{file}: OPENROUTER_TIMEOUT='-1' sets teacher.timeout_s: Input should be greater than 0"),
])
def test_config_mistakes_are_refused_in_one_line(project, capsys, monkeypatch, edits, env, expected):
    project.edit_config("run_config", **edits)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("FASTDISTILL_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert expected.format(file=project.configs / "run_config.yaml") in _refused(project, capsys)


@pytest.mark.parametrize("gateway_text, expected", [
    ("defaults: {concurrency: lots}\nproviders: {embedded: {}}\n",
     "provider_gateway.yaml: defaults: concurrency: Input should be a valid integer"),
    ("providers:\n  embedded: {timeout_s: 0}\n", "provider_gateway.yaml: providers.embedded.timeout_s: Input should "
                                                  "be greater than 0 (got 0)"),
    ("providers:\n  embedded: {timeout: 5}\n", "providers.embedded.timeout: Extra inputs are not permitted"),
    ("providers:\n  embedded: {api_key_env: sk-or-v1-0123456789}\n",
     "providers.embedded.api_key_env: String should match pattern"),
    ("providers: [embedded\n", "provider_gateway.yaml: not valid YAML: expected ',' or ']', but got '<stream end>'"),
])
def test_gateway_file_mistakes_name_the_key(project, capsys, gateway_text, expected):
    (project.configs / "provider_gateway.yaml").write_text(gateway_text)
    message = _refused(project, capsys)
    assert expected in message and "sk-or-v1" not in message  # a key written in the wrong place is not echoed


def test_malformed_yaml_names_the_line(project, capsys):
    (project.configs / "run_config.yaml").write_text("dataset:\n  kind: demo\n splits: [train\n")
    message = _refused(project, capsys)
    assert message.startswith(f"{project.configs / 'run_config.yaml'}: not valid YAML: ") and "line 3" in message


def test_dataset_mistakes(project, capsys, shop_file):
    def refused_with(**dataset) -> str:
        project.edit_config("run_config", dataset={"kind": "questions", "path": str(shop_file), "splits": ["train", "test"],
                                                   **dataset})
        return _refused(project, capsys)

    empty = write_questions(project.root / "empty.jsonl", [])
    assert refused_with(path=str(empty)) == f"dataset has 0 usable questions: {empty} has no rows"
    assert refused_with(splits=["train", "dev", "test"]) == (
        f"dataset.splits names 'dev' but {shop_file} has no questions in it")
    broken = write_questions(project.root / "broken.jsonl", [
        {"question": "q?", "db_path": "shop.sqlite", "gold_sql": "SELECT nope FROM sales", "split": s}
        for s in ("train", "test")])
    assert refused_with(path=str(broken)).startswith(
        "dataset: none of the first 1 questions of split 'train' can be used (gold_sql_failed: 1); e.g. ")
    unlabeled = write_questions(project.root / "unlabeled.jsonl", [
        {"question": "q?", "db_path": "shop.sqlite", "split": s} for s in ("train", "test")])
    assert refused_with(path=str(unlabeled)) == (
        "eval split 'test' has no questions with gold SQL: evaluation needs gold; label some, or set eval_split: "
        "null to distill without evaluating")
    project.edit_config("run_config", eval_split=None)
    assert cli.main(["run", "new", "gold-free"]) == 0  # the same data, for generating data only
    assert "created run gold-free" in capsys.readouterr().out


def test_the_cli_shows_a_traceback_only_with_debug(project):
    project.edit_config("run_config", decode={"max_tokens": -5})
    env = {**os.environ, "DAGSTER_HOME": str(project.root / "home")}
    plain = subprocess.run([str(BIN / "fastdistill"), "run", "new", "r"], env=env, capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stdout == "" and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == (f"fastdistill: error: {project.configs / 'run_config.yaml'}: decode.max_tokens: "
                                    "Input should be greater than or equal to 1 (got -5)")
    debug = subprocess.run([str(BIN / "fastdistill"), "--debug", "run", "new", "r"], env=env, capture_output=True,
                           text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert not (project.artifacts / "r").exists() and not (project.root / "home").exists()


def test_a_partition_made_in_the_ui_gets_the_same_preflight(project):
    project.edit_config("run_config", dataset={"splits": ["train", "dev"]})
    project.instance.add_dynamic_partitions("run_id", ["ui-run"])
    result = materialize(project, [raw], "ui-run", raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    assert error.cls_name == "Failure" and "eval_split 'test' is not among dataset.splits" in error.message
    assert not project.registry.exists("ui-run")


def test_an_emptied_dataset_fails_raw_with_the_reject_counts(project, shop_file):
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(shop_file), "splits": ["train", "test"]})
    project.new_run("emptied")
    shop_file.write_text(json.dumps({"question": "", "db_path": "shop.sqlite"}) + "\n{not json\n")
    result = materialize(project, [raw], "emptied", raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.event_specific_data.error.message.strip().endswith(
        "dataset has 0 usable questions (malformed_json: 1, missing_field:question: 1)")


def test_relative_dataset_paths_are_frozen_absolute(project, shop_file, monkeypatch):
    monkeypatch.chdir(project.root)
    project.edit_config("run_config", dataset={"kind": "questions", "path": shop_file.name, "splits": ["train", "test"]})
    assert cli.main(["run", "new", "relative"]) == 0
    assert project.registry.load("relative").config.dataset.path == str(shop_file)


def test_a_dataset_moved_after_creation_fails_raw_as_a_failure(project, shop_file):
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(shop_file), "splits": ["train", "test"]})
    project.new_run("moved")
    shop_file.rename(shop_file.with_suffix(".bak"))
    result = materialize(project, [raw], "moved", raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    assert error.cls_name == "Failure" and f"questions file not found: {shop_file}" in error.message


@pytest.mark.parametrize("judge, teacher_is_student, expected", [
    ({"enabled": True}, True, "quality_gates.yaml: judge.provider is null and the teacher provider is 'student', "
                              "which cannot judge: set judge.provider in quality_gates.yaml to a teacher provider"),
    ({"enabled": True, "provider": "student"}, False,
     "quality_gates.yaml: judge.provider is 'student', which cannot judge: set judge.provider in quality_gates.yaml"),
])
def test_a_student_cannot_judge(project, capsys, judge, teacher_is_student, expected):
    project.new_run("parent")
    project.edit_config("quality_gates", judge=judge)
    args = ("--parent", "parent") if teacher_is_student else ()
    assert expected in _refused(project, capsys, "bad-run", *args)


def test_a_student_taught_run_with_a_judge_of_its_own_is_created(project, capsys):
    project.new_run("parent")
    project.edit_config("quality_gates", judge={"enabled": True, "provider": "embedded"})
    assert cli.main(["run", "new", "child", "--parent", "parent"]) == 0
    assert "created run child" in capsys.readouterr().out
