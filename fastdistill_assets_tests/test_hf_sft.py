"""hf-sft (TRL's SFTTrainer + LoRA) on a tiny randomly initialized causal LM built from a config (CPU, no download)."""

import json
import time

import polars as pl
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")

from fastdistill_assets.config.models import TrainingConfig  # noqa: E402 - after importorskip
from fastdistill_assets.core.prompt_format import build_messages  # noqa: E402 - after importorskip
from fastdistill_assets.training.students import load_student, train_student  # noqa: E402 - after importorskip
from fastdistill_assets.training.tiny_lm import CHAT_TEMPLATE, make_tiny_model  # noqa: E402 - after importorskip

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 REAL -- Goals\n)"


def _frame(n: int, rationale: str | None = None) -> pl.DataFrame:
    rows = []
    for i in range(n):
        question = f"What is the goals when player is P{i}?"
        rows.append({"question": question, "schema": SCHEMA,
                     "messages": json.dumps(build_messages(question, SCHEMA, [["P0", 1]])),
                     "sql": f"SELECT col1 FROM t WHERE col0 = 'P{i}'", "rationale": rationale})
    return pl.DataFrame(rows)


def _corpus(frame: pl.DataFrame) -> list[str]:
    return [m["content"] for r in frame.iter_rows(named=True) for m in json.loads(r["messages"])] + frame["sql"].to_list()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model without a chat template (the plain prompt format)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), _corpus(_frame(8)))


def _config(model, **changes) -> TrainingConfig:
    return TrainingConfig(**{"trainer": "hf-sft", "model_path": str(model), "batch_size": 4,
                             "lora_learning_rate": 1e-2, "max_length": 256, **changes})


LOAD_DELAY_S = 1.0


def test_hf_sft_trains_predicts_and_reloads(tiny, tmp_path, monkeypatch):
    from fastdistill_assets.training import hf_sft

    real_load = hf_sft._load_base

    def slow_load(model_path, device):  # the real load, made 1 s slower: not training time
        time.sleep(LOAD_DELAY_S)
        return real_load(model_path, device)

    monkeypatch.setattr(hf_sft, "_load_base", slow_load)
    student, report = train_student(_config(tiny, max_steps=60), _frame(8), "sql", tmp_path / "student")
    assert report["steps"] == 60 and report["used"] == 8 and report["epochs"] == 30 and report["device"] in {"cpu", "cuda"}
    assert report["resumed_from_step"] == 0 and report["skipped_by_reason"] == {}
    assert report["train_loss_after"] < report["train_loss_before"] - 0.75  # deterministic: 6.00 -> ~5.15
    # train_s runs from the first optimizer step to the last: loading, the loss passes and saving are out
    assert 0 < report["train_s"] < report["wall_s"] - LOAD_DELAY_S
    assert report["train_tokens_per_sec"] == round(report["train_tokens"] / report["train_s"], 1) > 0
    prompt = build_messages("What is the goals when player is P3?", SCHEMA, "[]")
    answer = student.answer(prompt)
    assert answer.startswith("SELECT col1 FROM t WHERE col0")
    reloaded = load_student(tmp_path / "student")
    assert reloaded.answer(prompt) == answer


def test_hf_sft_with_a_chat_template_trains_on_the_conversation(tmp_path):
    base = make_tiny_model(tmp_path / "tiny", _corpus(_frame(8)), chat_template=CHAT_TEMPLATE)
    student, report = train_student(_config(base, max_steps=30), _frame(8), "sql", tmp_path / "student")
    assert report["steps"] == 30 and report["train_loss_after"] < report["train_loss_before"] - 0.5
    assert student.answer(build_messages("What is the goals when player is P3?", SCHEMA, "[]")).startswith("SELECT")


def test_sft_records_keep_the_rationale_and_skip_rows_without_sql(tiny):
    from fastdistill_assets.training.hf_sft import _load_base, sft_records

    _, tokenizer = _load_base(str(tiny), "cpu")
    frame = pl.concat([_frame(2, rationale="Filter on the player."), _frame(1).with_columns(sql=pl.lit(None, pl.String))])
    records = sft_records(tokenizer, frame, "sql")
    assert [r["completion"] for r in records] == [
        f"### RATIONALE\nFilter on the player.\n### ANSWER\nSELECT col1 FROM t WHERE col0 = 'P{i}'" for i in range(2)]
    assert records[0]["prompt"].endswith("<|assistant|>\n") and "P0?" in records[0]["prompt"]


class Killed(Exception):
    """The training process killed right after a checkpoint was written."""


def _kill_after_first_checkpoint(monkeypatch) -> None:
    from trl import SFTTrainer

    real_save = SFTTrainer._save_checkpoint

    def save_then_die(self, model, trial):
        real_save(self, model, trial)
        raise Killed

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", save_then_die)


def test_a_killed_training_resumes_from_its_checkpoint(tiny, tmp_path, monkeypatch):
    config, frame, checkpoints = _config(tiny, max_steps=12, checkpoint_steps=5), _frame(8), tmp_path / "checkpoints"
    _, straight = train_student(config, frame, "sql", tmp_path / "straight")
    _kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        train_student(config, frame, "sql", tmp_path / "student", checkpoints)
    assert (checkpoints / "checkpoint-5" / "trainer_state.json").is_file()
    monkeypatch.undo()
    _, resumed = train_student(config, frame, "sql", tmp_path / "student", checkpoints)
    assert resumed["resumed_from_step"] == 5 and resumed["steps"] == 12 and straight["resumed_from_step"] == 0
    assert resumed["train_tokens"] == pytest.approx(straight["train_tokens"] * 7 / 12, rel=0.2)  # 7 of 12 steps
    # same data order, optimizer and schedule state: the resumed training ends where the straight one does
    assert resumed["train_loss_after"] == pytest.approx(straight["train_loss_after"], abs=2e-3)
    assert (tmp_path / "student" / "adapter").is_dir()
    # killed after training but before the stage was published: the same training trains no step again
    _, again = train_student(config, frame, "sql", tmp_path / "again", checkpoints)
    assert (again["resumed_from_step"], again["steps"], again["train_tokens"]) == (12, 12, 0)
    assert again["train_loss_after"] == pytest.approx(straight["train_loss_after"], abs=2e-3)


@pytest.mark.parametrize("change", ["config", "data"])
def test_a_checkpoint_of_another_training_is_not_resumed(tiny, tmp_path, monkeypatch, change):
    config, frame, checkpoints = _config(tiny, max_steps=12, checkpoint_steps=5), _frame(8), tmp_path / "checkpoints"
    _kill_after_first_checkpoint(monkeypatch)
    with pytest.raises(Killed):
        train_student(config, frame, "sql", tmp_path / "student", checkpoints)
    monkeypatch.undo()
    if change == "config":
        config = config.model_copy(update={"lora_learning_rate": 5e-3})
    else:
        frame = frame.with_columns(sql=pl.col("sql") + " LIMIT 1")
    _, report = train_student(config, frame, "sql", tmp_path / "student", checkpoints)
    assert report["resumed_from_step"] == 0 and report["steps"] == 12


def test_batched_greedy_answers_match_one_by_one(tiny):
    from fastdistill_assets.training.hf_sft import HfStudent, _load_base

    model, tokenizer = _load_base(str(tiny), "cpu")  # random weights: each prompt gets its own babble
    student = HfStudent(model.eval(), tokenizer, "cpu")
    prompts = [build_messages(f"What is the goals when player is {name}?", SCHEMA, rows)
               for name, rows in [("P1", "[]"), ("Pele do Nascimento", [["P0", 1]]), ("X", [["P0", 1], ["P2", 3]]),
                                  ("P22", "[]"), ("Ronaldo", [["P9", 4]])]]
    one_by_one = [student.answer(p) for p in prompts]
    assert len(set(one_by_one)) > 1  # the answers depend on the prompt (so padding mistakes would show)
    assert student.answer_many(prompts, 3) == one_by_one


def test_hf_sft_needs_a_local_model():
    with pytest.raises(ValueError, match="model_path"):
        train_student(TrainingConfig(trainer="hf-sft"), _frame(1), "sql", None)


def test_hf_sft_student_through_the_pipeline(project, tmp_path):
    from fastdistill_assets.store.storage import ArtifactStore
    from fastdistill_assets_tests.conftest import (
        every_definition,
        materialize,
        teacher_gateway,
    )

    base = make_tiny_model(tmp_path / "tiny", ["SELECT col0 FROM t WHERE col1 = 3", "What is the goals?"])
    project.edit_config("run_config", dataset={"limit_per_split": 12},
                        training={"trainer": "hf-sft", "model_path": str(base), "max_steps": 3, "batch_size": 4})
    project.edit_config("quality_gates", eval={"blocking": False})
    project.new_run("hf")
    result = materialize(project, every_definition(project), "hf", teacher=teacher_gateway(project))
    assert result.success
    store = ArtifactStore(project.artifacts)
    model = store.read("hf", "student_model")
    assert model.frame["trainer"][0] == "hf-sft" and model.frame["steps"][0] == 3
    assert model.frame["train_s"][0] < model.frame["wall_s"][0]
    assert (model.files["model"] / "adapter").is_dir()
    report = json.loads(store.read("hf", "eval_report").files["eval_report.json"].read_text())
    assert report["trainer"] == "hf-sft" and report["student"]["n"] == 12
