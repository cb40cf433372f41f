"""Train and load students by trainer name; every student answers ``predict(question, schema, rows)``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from fastdistill_assets.config.models import TrainingConfig
from fastdistill_assets.core.prompt_format import parse_user_prompt
from fastdistill_assets.training.sketch import (
    Example,
    SketchModel,
    TrainReport,
    train_sketch,
)


class Student(Protocol):
    def answer(self, messages: list[dict[str, str]]) -> str:
        """The student's reply to a prompt built by ``prompt_format.build_messages`` (the training format)."""
        ...

    def answer_many(self, prompts: list[list[dict[str, str]]], batch_size: int) -> list[str | None]:
        """Replies to many prompts, in order, ``batch_size`` at a time where the student batches;
        None for a prompt the student cannot read (a wrong answer, not a crash)."""
        ...


class SketchStudent:
    def __init__(self, model: SketchModel) -> None:
        self.model = model

    def answer(self, messages: list[dict[str, str]]) -> str:
        prompt = parse_user_prompt(next(m["content"] for m in reversed(messages) if m.get("role") == "user"))
        return self.model.predict(prompt["question"], prompt["schema"])

    def answer_many(self, prompts: list[list[dict[str, str]]], batch_size: int) -> list[str | None]:
        return [_or_none(self.answer, messages) for messages in prompts]


def _or_none(answer: Callable[[list[dict[str, str]]], str], messages: list[dict[str, str]]) -> str | None:
    try:
        return answer(messages)
    except ValueError:  # a schema the student cannot read
        return None


def examples_from(frame: pl.DataFrame, sql_column: str) -> list[Example]:
    rows = frame.filter(pl.col(sql_column).is_not_null() & (pl.col(sql_column) != ""))
    return [Example(q, s, sql) for q, s, sql in rows.select("question", "schema", sql_column).iter_rows()]


def train_student(config: TrainingConfig, frame: pl.DataFrame, sql_column: str, folder: Path,
                  checkpoint_dir: Path | None = None) -> tuple[Student, dict[str, Any]]:
    """Train the configured student on ``frame`` (question, schema, ``sql_column``), save it to ``folder``.

    ``checkpoint_dir``: a folder that outlives the step, where hf-sft keeps resumable checkpoints
    (a killed training resumes from them); the sketch trainer, seconds long, does not use it.
    """
    if config.trainer == "hf-sft":
        from fastdistill_assets.training.hf_sft import train_hf_sft

        return train_hf_sft(config, frame, sql_column, folder, checkpoint_dir)
    model, report = train_sketch(examples_from(frame, sql_column), config.epochs, config.learning_rate, config.seed)
    model.save(folder)
    return SketchStudent(model), report_metadata(report, folder)


def report_metadata(report: TrainReport, folder: Path) -> dict[str, Any]:
    return {**asdict(report), "train_tokens_per_sec": report.train_tokens_per_sec,
            "model_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def load_student(folder: Path) -> Student:
    trainer = json.loads((folder / "model.json").read_text())["trainer"]
    if trainer == "hf-sft":
        from fastdistill_assets.training.hf_sft import HfStudent

        return HfStudent.load(folder)
    return SketchStudent(SketchModel.load(folder))
