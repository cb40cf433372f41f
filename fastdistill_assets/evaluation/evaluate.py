"""Evaluate a student, its baseline and the teacher on the held-out split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fastdistill_assets.config.models import FrozenRun
from fastdistill_assets.core.judge_format import judge_messages, parse_judge_score
from fastdistill_assets.core.prompt_format import prompt_hash
from fastdistill_assets.evaluation.gold_free import withheld_precision
from fastdistill_assets.evaluation.metrics import (
    Accuracy,
    EvalItem,
    exec_correct,
    paired_comparison,
    win_rate,
)
from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.gates.judge import JUDGE_DECODE, judge_endpoint
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.teacher.generation import GenerationRequest
from fastdistill_assets.training.students import Student


class NoEvalGold(ValueError):
    """The eval split has no question with gold SQL: the run is for data generation only."""


def no_eval_gold_message(split: str | None) -> str:
    """One line, said by eval_report when it refuses."""
    if split is None:
        return "eval_split is null: this run distills data and trains a student without evaluating it"
    return (f"eval split {split!r} has no questions with gold SQL left after loading: this run can generate "
            "data (raw → distilled, student_model), but cannot be evaluated")


def eval_items(canonical: pl.DataFrame, split: str | None) -> tuple[pl.DataFrame, list[EvalItem]]:
    """The eval split's questions that have gold (only those can be scored).

    Raises:
        NoEvalGold: none has, or the run has no eval split.
    """
    if split is None:
        raise NoEvalGold(no_eval_gold_message(split))
    rows = canonical.filter((pl.col("split") == split) & pl.col("gold_sql").is_not_null())
    if rows.height == 0:
        raise NoEvalGold(no_eval_gold_message(split))
    items = [EvalItem(r["question"], r["schema"], r["sample_rows"], r["db_path"], r["dialect"], r["gold_sql"],
                      r["evidence"]) for r in rows.iter_rows(named=True)]
    return rows, items


def predict_all(student: Student, items: list[EvalItem], batch_size: int) -> list[str | None]:
    """The student's answers to the eval prompts, ``batch_size`` at a time; None where it cannot
    read a prompt (a wrong answer, not a crash)."""
    return student.answer_many([item.messages() for item in items], batch_size)


def teacher_outputs(gateway: ProviderGateway, frozen: FrozenRun, items: list[EvalItem]) -> list[str | None]:
    """The teacher's best answers on the test questions: one greedy decode each (cached)."""
    requests = []
    for index, item in enumerate(items):  # one request per eval row (the cache is keyed by prompt, not id)
        messages = item.messages()
        requests.append(GenerationRequest(f"eval:{index}", messages,
                                          prompt_hash(messages)))
    decode = frozen.config.decode.model_copy(update={"name": "greedy", "temperature": 0.0, "num_generations": 1})
    teacher = frozen.config.teacher
    results, _, _ = gateway.generate(requests, teacher.provider, teacher.model, decode,
                                     overrides=teacher.endpoint_overrides())
    return [r.content for r in results]


def judge_ties(gateway: ProviderGateway, frozen: FrozenRun, items: list[EvalItem], student_out: list[str | None],
               teacher_out: list[str | None], student_ok: list[bool], teacher_ok: list[bool],
               executor: Executor) -> list[bool | None]:
    """Where both or neither are execution-correct, the judge prefers one (None: a tie)."""
    requests, ties = [], [i for i, (s, t) in enumerate(zip(student_ok, teacher_ok, strict=True)) if s == t]
    for i in ties:
        item = items[i]
        for who, output in (("student", student_out[i]), ("teacher", teacher_out[i])):
            sql = clean_sql(output).sql
            result = executor.run(item.db_path, item.dialect, sql) if sql else None
            preview = result.rows[:5] if result is not None and result.ok else []
            messages = judge_messages(item.question, item.schema, sql, preview)
            requests.append(GenerationRequest(f"eval-judge:{i}:{who}", messages, prompt_hash(messages)))
    verdicts: list[bool | None] = [None] * len(items)
    if not requests:
        return verdicts
    judge = judge_endpoint(frozen.gates.judge, frozen.config.teacher)
    results, _, _ = gateway.generate(requests, judge.provider, judge.model, JUDGE_DECODE,
                                     concurrency=frozen.gates.judge.concurrency, overrides=judge.overrides)
    scores = {r.request_id: parse_judge_score(r.content)[0] if r.error is None else None for r in results}
    for i in ties:
        s, t = scores[f"eval-judge:{i}:student"], scores[f"eval-judge:{i}:teacher"]
        if s is not None and t is not None and s != t:
            verdicts[i] = s > t
    return verdicts


@dataclass(frozen=True)
class PreviousRun:
    """A previous run's eval report (the ``run`` baseline) and its per-question student correctness."""

    run_id: str
    report: dict[str, Any]
    correct_by_sample: dict[str, bool]

    def correct_on(self, sample_ids: list[str]) -> list[bool] | None:
        """Its student's correctness on these questions, in order; None unless it answered them all."""
        if not all(sid in self.correct_by_sample for sid in sample_ids):
            return None
        return [self.correct_by_sample[sid] for sid in sample_ids]


@dataclass(frozen=True)
class BaselineResult:
    """The baseline's accuracy summary (``kind``, ``accuracy`` and, where known, counts and
    interval) and its per-question correctness on the eval questions (None: nothing to pair,
    ``unpaired_reason`` says why)."""

    summary: dict[str, Any]
    correct: list[bool] | None
    unpaired_reason: str | None = None


def baseline_accuracy(frozen: FrozenRun, baseline: Student | None, items: list[EvalItem], sample_ids: list[str],
                      executor: Executor, previous: PreviousRun | None) -> BaselineResult:
    """The baseline chosen in the gate config: the ungated student (trained by baseline_model),
    a previous run, or a fixed value."""
    config = frozen.gates.eval.baseline
    if config.kind == "fixed":
        if config.value is None:
            raise ValueError("eval.baseline.kind=fixed needs eval.baseline.value")
        return BaselineResult({"kind": "fixed", "accuracy": config.value}, None,
                              "it is one number, with no per-question answers to pair")
    if config.kind == "run":
        if previous is None:
            raise ValueError("eval.baseline.kind=run needs eval.baseline.run_id with an eval_report")
        correct = previous.correct_on(sample_ids)
        return BaselineResult({**previous.report["student"], "kind": f"run:{previous.run_id}"}, correct,
                              None if correct is not None else
                              f"run {previous.run_id} was not evaluated on all of these questions")
    if baseline is None:
        raise ValueError("eval.baseline.kind=ungated needs baseline_model's model: materialize baseline_model")
    correct = exec_correct(predict_all(baseline, items, frozen.config.training.generation_batch_size), items,
                           executor, frozen.gates.gold)
    return BaselineResult({**Accuracy(sum(correct), len(correct)).as_dict(), "kind": "ungated"}, correct)


def paired_summary(student_ok: list[bool], baseline: BaselineResult) -> dict[str, Any]:
    """Student vs baseline on the same questions (difference, interval, McNemar), or why not."""
    if baseline.correct is None:
        return {"applicable": False, "reason": baseline.unpaired_reason}
    return {"applicable": True, **paired_comparison(student_ok, baseline.correct).as_dict("student", "baseline")}


def evaluate(frozen: FrozenRun, canonical: pl.DataFrame, filtered: pl.DataFrame, student: Student,
             baseline_student: Student | None, gateway: ProviderGateway,
             previous: PreviousRun | None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-question results and the summary numbers (student, baseline, their paired comparison,
    teacher, win rate). ``baseline_student``: baseline_model's student (ungated kind), else None."""
    rows, items = eval_items(canonical, frozen.config.eval_split)
    with Executor(frozen.gates.execution) as executor:
        student_out = predict_all(student, items, frozen.config.training.generation_batch_size)
        student_ok = exec_correct(student_out, items, executor, frozen.gates.gold)
        teacher_out = teacher_outputs(gateway, frozen, items)
        teacher_ok = exec_correct(teacher_out, items, executor, frozen.gates.gold)
        baseline = baseline_accuracy(frozen, baseline_student, items, rows["sample_id"].to_list(), executor, previous)
        preferences = (judge_ties(gateway, frozen, items, student_out, teacher_out, student_ok, teacher_ok, executor)
                       if frozen.gates.judge.enabled else None)
    per_question = rows.select("sample_id", "question", "gold_sql").with_columns(
        pl.Series("student_sql", student_out, pl.String), pl.Series("student_correct", student_ok),
        pl.Series("teacher_output", teacher_out, pl.String), pl.Series("teacher_correct", teacher_ok),
        pl.Series("baseline_correct", baseline.correct, pl.Boolean) if baseline.correct is not None
        else pl.lit(None, pl.Boolean).alias("baseline_correct"))
    summary = {
        "eval_split": frozen.config.eval_split,
        "eval_questions": len(items),
        "eval_questions_without_gold": canonical.filter((pl.col("split") == frozen.config.eval_split)
                                                        & pl.col("gold_sql").is_null()).height,
        "trainer": frozen.config.training.trainer,
        "student": Accuracy(sum(student_ok), len(student_ok)).as_dict(),
        "teacher": Accuracy(sum(teacher_ok), len(teacher_ok)).as_dict(),
        "baseline": baseline.summary,
        "paired_comparison": paired_summary(student_ok, baseline),
        "online_win_rate": {**win_rate(student_ok, teacher_ok, preferences).as_dict(),
                            "judge_decided_ties": preferences is not None},
        "gold_free_precision": withheld_precision(filtered, canonical, frozen.gates, frozen.config.recipe.rationale),
    }
    return per_question, summary


def load_previous(store: ArtifactStore, run_id: str | None) -> PreviousRun | None:
    """The eval report of a previous run (the ``run`` baseline), or None."""
    if not run_id:
        return None
    output = store.read(run_id, "eval_report")
    correct = dict(output.frame.select("sample_id", "student_correct").iter_rows())
    return PreviousRun(run_id, json.loads(Path(output.files["eval_report.json"]).read_text()), correct)
