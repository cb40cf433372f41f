"""hf-sft on a tiny randomly initialized causal LM built from a config (CPU, no download)."""

import json
import time

import polars as pl
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from fastdistill_assets.config import TrainingConfig  # noqa: E402
from fastdistill_assets.teacher.prompts import build_messages  # noqa: E402
from fastdistill_assets.training.hf_sft import make_tiny_model  # noqa: E402
from fastdistill_assets.training.students import load_student, train_student  # noqa: E402

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 REAL -- Goals\n)"


def _frame(n: int) -> pl.DataFrame:
    rows = []
    for i in range(n):
        question = f"What is the goals when player is P{i}?"
        rows.append({"question": question, "schema": SCHEMA,
                     "messages": json.dumps(build_messages(question, SCHEMA, [["P0", 1]])),
                     "sql": f"SELECT col1 FROM t WHERE col0 = 'P{i}'"})
    return pl.DataFrame(rows)


LOAD_DELAY_S = 1.0


def test_hf_sft_trains_predicts_and_reloads(tmp_path, monkeypatch):
    from fastdistill_assets.training import hf_sft

    real_load = hf_sft._load_base

    def slow_load(model_path, device):  # the real load, made 1 s slower: not training time
        time.sleep(LOAD_DELAY_S)
        return real_load(model_path, device)

    monkeypatch.setattr(hf_sft, "_load_base", slow_load)
    frame = _frame(8)
    corpus = [m["content"] for r in frame.iter_rows(named=True) for m in json.loads(r["messages"])] + frame["sql"].to_list()
    base = make_tiny_model(tmp_path / "tiny", corpus)
    config = TrainingConfig(trainer="hf-sft", model_path=str(base), max_steps=60, batch_size=4,
                            lora_learning_rate=1e-2, lora_r=8, max_length=256)
    student, report = train_student(config, frame, "sql", tmp_path / "student")
    assert report["steps"] == 60 and report["used"] == 8 and report["epochs"] == 30 and report["device"] in {"cpu", "cuda"}
    assert report["train_loss_after"] < report["train_loss_before"] - 0.75  # deterministic: 6.00 -> ~5.0
    # train_s runs from the first optimizer step to the last: loading, the loss passes and saving are out
    assert 0 < report["train_s"] < report["wall_s"] - LOAD_DELAY_S
    assert report["train_tokens_per_sec"] == round(report["train_tokens"] / report["train_s"], 1) > 0
    prompt = build_messages("What is the goals when player is P3?", SCHEMA, "[]")
    answer = student.answer(prompt)
    assert isinstance(answer, str)
    reloaded = load_student(tmp_path / "student")
    assert reloaded.answer(prompt) == answer


def test_hf_sft_needs_a_local_model():
    with pytest.raises(ValueError, match="model_path"):
        train_student(TrainingConfig(trainer="hf-sft"), _frame(1), "sql", None)


def test_hf_sft_student_through_the_pipeline(project, tmp_path):
    from fastdistill_assets.storage import ArtifactStore
    from fastdistill_assets_tests.conftest import every_definition, materialize, teacher_gateway

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
