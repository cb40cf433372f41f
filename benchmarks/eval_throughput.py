"""Eval throughput: student answers/s one by one (``answer``) vs batched (``answer_many``).

The prompts are the demo dataset's test split, exactly as eval_report asks them. The sketch
student is trained on the demo train split's gold SQL; the hf-sft student on a tiny randomly
initialized causal LM (fastdistill_assets/training/tiny_lm.py, CPU or GPU, no download), when the
``train`` extra is installed (otherwise it is skipped with a note). Checks that both ways give
the same answers, and prints answers/s for each.

    .venv/bin/python benchmarks/eval_throughput.py [--batch-size 16] [--hf-questions 64] [--hf-steps 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from fastdistill_assets.config.models import DatasetConfig, RunConfig, TrainingConfig
from fastdistill_assets.datasets.canonical import canonicalize
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.evaluation.evaluate import eval_items
from fastdistill_assets.training.students import Student, train_student

Prompts = list[list[dict[str, str]]]
REPO = Path(__file__).resolve().parents[1]


def demo_split(data_dir: Path) -> tuple[pl.DataFrame, Prompts]:
    """The demo train split (question, schema, messages, gold_sql) and the test split's eval prompts."""
    config = RunConfig(dataset=DatasetConfig(kind="demo"))
    canonical = canonicalize(load_dataset(config.dataset, data_dir).frame, config).frame
    train, train_items = eval_items(canonical, "train")
    _, items = eval_items(canonical, "test")
    messages = pl.Series("messages", [json.dumps(item.messages()) for item in train_items])
    return train.with_columns(messages), [item.messages() for item in items]


def one_by_one(student: Student, prompts: Prompts) -> list[str | None]:
    """Each prompt on its own (a batch of one)."""
    return [student.answer_many([messages], 1)[0] for messages in prompts]


def timed(run: Callable[[], list[str | None]], repeats: int) -> tuple[list[str | None], float]:
    """The answers and the best wall time of ``repeats`` runs."""
    best, answers = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        answers = run()
        best = min(best, time.perf_counter() - start)
    return answers, best


def report(name: str, student: Student, prompts: Prompts, batch_size: int, repeats: int) -> bool:
    """Prints the figures; returns whether both ways gave the same answers."""
    single, single_s = timed(lambda: one_by_one(student, prompts), repeats)
    batched, batched_s = timed(lambda: student.answer_many(prompts, batch_size), repeats)
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    print(f"{name}: {len(prompts)} test prompts; one by one {len(prompts) / single_s:,.1f} answers/s, "
          f"answer_many(batch_size={batch_size}) {len(prompts) / batched_s:,.1f} answers/s "
          f"(x{single_s / batched_s:.2f}); identical answers {same}/{len(prompts)}")
    return same == len(prompts)


def hf_student(train: pl.DataFrame, prompts: Prompts, folder: Path, steps: int) -> Student | None:
    """A hf-sft student on the tiny test model, or None (with a note) without the train extra."""
    sys.path.insert(0, str(REPO))  # the tests' package is not installed
    try:
        from fastdistill_assets.training.tiny_lm import make_tiny_model
    except ImportError as err:
        print(f"hf-sft: skipped ({err}; the train extra: pip install -e '.[test,train]')")
        return None
    corpus = [m["content"] for messages in prompts for m in messages] + train["gold_sql"].to_list()
    base = make_tiny_model(folder / "tiny", corpus)
    config = TrainingConfig(trainer="hf-sft", model_path=str(base), max_steps=steps, batch_size=8, max_length=384)
    student, _ = train_student(config, train.head(256), "gold_sql", folder / "student")
    return student


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=TrainingConfig().generation_batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hf-questions", type=int, default=64, help="test prompts for the (slower) hf-sft student")
    parser.add_argument("--hf-steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, prompts = demo_split(Path(tmp) / "data")
        sketch, _ = train_student(TrainingConfig(), train, "gold_sql", Path(tmp) / "sketch")
        same = report("sketch", sketch, prompts, args.batch_size, args.repeats)
        hf = hf_student(train, prompts, Path(tmp), args.hf_steps)
        if hf is not None:
            same &= report("hf-sft (tiny LM)", hf, prompts[: args.hf_questions], args.batch_size, 1)
    return 0 if same else 1  # batched answers must equal one-by-one answers


if __name__ == "__main__":
    sys.exit(main())
