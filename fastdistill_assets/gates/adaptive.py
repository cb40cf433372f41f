"""Adaptive sampling: a question gets more answers only while it is not settled.

With ``decode.adaptive``, each question first gets ``decode.initial_generations`` answers. They are
gated at once (``pipeline.gate_frame``: cleaned, checked, executed read-only through ``sqlsafe`` with
the run's limits, grounded), and a question whose answers do not settle it is asked again, round by
round, up to ``decode.num_generations`` answers. The rule (:func:`settled`) is the consistency gate's own,
applied to what the answers so far allow (:func:`settled`):

- **decided**: the gate keeps the majority now, and either it leads the runner-up by
  ``decode.stop_margin`` answers or no remaining answer could change that (all of them going to
  the runner-up or to a new result would still leave it the kept majority);
- **hopeless**: no group of results, nor a result not seen yet, could become a kept majority even if
  every remaining answer joined it (too few could execute, or the agreement could not reach
  ``min_agreement``, or the only leader is a degenerate result the gate rejects);
- otherwise it is asked again, for the fewest answers that could settle it (:func:`answers_needed`),
  in one request where the provider accepts ``n``: a round that could not settle it is never paid.

A labeled question is sampled by the same rule with its gold hidden (``shadow.hide_gold``), so the
shadow calibration measures the gate that gold-free questions get; its label is still its gold's.
``stop_margin`` at least ``num_generations`` stops only where the verdict is certain. Each round's
answers go through the response cache, so a step killed between rounds resumes without paying
again, and ``filtered`` gets exactly the candidates of a fixed run that drew those answers (the
same sample ids, candidate ids and generation indices).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from fastdistill_assets.config.models import ConsistencyGates, GatesConfig, RunConfig
from fastdistill_assets.gates.consistency import sample_verdicts
from fastdistill_assets.gates.pipeline import GateWorkers, gate_frame
from fastdistill_assets.gates.shadow import hide_gold
from fastdistill_assets.teacher.candidates import (
    TeacherAccount,
    build_requests,
    candidate_frame,
)
from fastdistill_assets.teacher.generation import Generator


def settled(signatures: Sequence[str | None], degenerate: Sequence[bool | None], most: int,
            config: ConsistencyGates, stop_margin: int) -> bool:
    """Whether a question with these answers needs no more (see the module docstring).

    ``signatures[i]``: answer i's result signature, None where it failed a gate before consistency;
    ``degenerate[i]``: whether that result is degenerate; ``most``: the answers a question may get.
    """
    remaining = most - len(signatures)
    if remaining <= 0 or decided(signatures, degenerate, most, config, stop_margin):
        return True
    counts = Counter(s for s in signatures if s is not None)
    degenerate_of = {s: bool(d) for s, d in zip(signatures, degenerate, strict=True) if s is not None}
    executed = sum(counts.values())
    ranked = counts.most_common()
    reject_degenerate = config.degenerate_result == "reject"
    groups = [(c, s) for s, c in ranked] + [(0, None)]   # None: a result no answer has given yet
    for count, signature in groups:
        if signature is not None and reject_degenerate and degenerate_of[signature]:
            continue
        best, total = count + remaining, executed + remaining
        others = max((c for s, c in ranked if s != signature), default=0)
        if total >= config.min_executed and best > others and best / total >= config.min_agreement:
            return False   # it could still be kept: ask again
    return True


def decided(signatures: Sequence[str | None], degenerate: Sequence[bool | None], most: int,
            config: ConsistencyGates, stop_margin: int) -> bool:
    """The gate keeps the majority now, and it leads the runner-up by ``stop_margin`` answers or
    keeps it whatever the remaining answers say."""
    _, reasons = sample_verdicts(signatures, config, degenerate)
    if not any(reason is None for s, reason in zip(signatures, reasons, strict=True) if s is not None):
        return False
    ranked = Counter(s for s in signatures if s is not None).most_common()
    executed, remaining = sum(c for _, c in ranked), most - len(signatures)
    top, runner_up = ranked[0][1], (ranked[1][1] if len(ranked) > 1 else 0)
    worst = runner_up + remaining   # every remaining answer to the runner-up (or to a new result)
    unchangeable = top > worst and top / (executed + remaining) >= config.min_agreement
    return top - runner_up >= stop_margin or unchangeable


NEW_RESULT = "\x00new"   # a result no answer has given yet


def answers_needed(signatures: Sequence[str | None], degenerate: Sequence[bool | None], most: int,
                   config: ConsistencyGates, stop_margin: int) -> int:
    """How many answers to ask next for an unsettled question, in one request: the fewest after which
    it could be :func:`decided` (all of them giving one of the results seen so far, or all a result
    not seen yet), so no request is paid that could not settle it; the remaining answers if none could."""
    remaining = most - len(signatures)
    candidates = [s for s, _ in Counter(s for s in signatures if s is not None).most_common()]
    for k in range(1, remaining + 1):
        for joined in (*candidates, NEW_RESULT):
            if decided([*signatures, *[joined] * k], [*degenerate, *[False] * k], most, config, stop_margin):
                return k
    return max(remaining, 1)


@dataclass
class SamplingSummary:
    """One chunk's adaptive sampling: answers drawn, answers a fixed run would draw, rounds, and
    questions stopped before ``num_generations``."""

    answers: int = 0
    answers_fixed: int = 0
    rounds: int = 0
    stopped_early: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"answers": self.answers, "answers_fixed": self.answers_fixed, "rounds": self.rounds,
                "stopped_early": self.stopped_early}

    def merge(self, other: dict[str, Any]) -> SamplingSummary:
        self.answers += other["answers"]
        self.answers_fixed += other["answers_fixed"]
        self.rounds = max(self.rounds, other["rounds"])
        self.stopped_early += other["stopped_early"]
        return self

    def metadata(self) -> dict[str, Any]:
        return {"adaptive_answers": self.answers, "adaptive_answers_fixed": self.answers_fixed,
                "adaptive_answer_share": round(self.answers / self.answers_fixed, 4) if self.answers_fixed else None,
                "adaptive_rounds": self.rounds, "adaptive_stopped_early": self.stopped_early}


class SettleRule:
    """The stopping rule over one chunk's rounds: gates each new answer once and remembers, per
    question, what its answers gave."""

    def __init__(self, gates: GatesConfig, most: int, stop_margin: int, rationale: bool, runner: GateWorkers) -> None:
        self.gates, self.most, self.stop_margin, self.rationale, self.runner = gates, most, stop_margin, rationale, runner
        self._answers: dict[str, list[tuple[str | None, bool | None]]] = {}

    def open_questions(self, new: pl.DataFrame) -> dict[str, int]:
        """Of the questions ``new`` answers (teacher_candidates rows, a question's in generation
        order), those that need more answers, in their order, with how many to ask next."""
        gated = gate_frame(new, self.gates, rationale=self.rationale, runner=self.runner).with_row_index("_row")
        labeled = gated.filter(pl.col("gold_sql").is_not_null())
        view = pl.concat([gated.filter(pl.col("gold_sql").is_null()), hide_gold(labeled)]).sort("_row")
        for sample_id, reason, signature, degenerate in view.select(
                "sample_id", "reject_reason", "result_signature", "result_degenerate").iter_rows():
            self._answers.setdefault(sample_id, []).append((signature if reason is None else None, degenerate))
        asked = new["sample_id"].unique(maintain_order=True).to_list()
        wanted = {}
        for q in asked:
            signatures, degenerate = [s for s, _ in self._answers[q]], [d for _, d in self._answers[q]]
            if not settled(signatures, degenerate, self.most, self.gates.consistency, self.stop_margin):
                wanted[q] = answers_needed(signatures, degenerate, self.most, self.gates.consistency, self.stop_margin)
        return wanted


def sample_adaptively(canonical: pl.DataFrame, config: RunConfig, generator: Generator, provider: str,
                      rule: SettleRule) -> tuple[pl.DataFrame, TeacherAccount, SamplingSummary]:
    """One chunk of teacher_candidates drawn round by round (see the module docstring): the rows a
    fixed run would have for the answers drawn, in its order, the teacher's account and the summary."""
    requests, carried = build_requests(canonical, config)
    most = config.decode.num_generations
    first = min(config.decode.initial_generations, most)
    wanted = [i for i, request in enumerate(requests) if request.generation_index < first]
    account, summary, frames = TeacherAccount(), SamplingSummary(answers_fixed=len(requests)), []
    while wanted:
        summary.rounds += 1
        started, calls, fallbacks = time.perf_counter(), generator.calls, generator.n_fallbacks
        results = generator.run([requests[i] for i in wanted])
        account.add(results, time.perf_counter() - started, generator.calls - calls, generator.n_fallbacks - fallbacks)
        frame = candidate_frame([carried[i] for i in wanted], results, provider, generator.settings.model)
        frames.append(frame.with_columns(pl.Series("_request", wanted)))
        still_open = rule.open_questions(frame)
        last = {carried[i]["sample_id"]: i for i in wanted}   # each question's latest answer
        wanted = [i + k for q, i in last.items() if q in still_open
                  for k in range(1, min(still_open[q], most - 1 - requests[i].generation_index) + 1)]
    drawn = pl.concat(frames).sort("_request") if frames else candidate_frame([], [], provider, "")
    summary.answers = drawn.height
    per_question = drawn.group_by("sample_id").len()["len"] if drawn.height else pl.Series([], dtype=pl.UInt32)
    summary.stopped_early = int((per_question < most).sum())
    return drawn.drop("_request", strict=False), account, summary
