"""Escalation: ask a stronger teacher about the gold-free samples the first one left unsettled.

A gold-free sample with no kept answer, one of whose candidates was rejected for a reason in
``teacher.escalate.reasons`` (no majority, low agreement, too few executed, a degenerate
majority, an ungrounded literal, a missing question number), or none of whose candidates
executed (with ``too_few_executed`` among the reasons, where an answer can be kept without the
first teacher's confirming it: ``trust_single`` or several escalated answers), is asked again of
the escalation teacher with the same prompt.
Its answers are new candidates (``label_source`` ``escalated``) that pass the same gates: with at
least ``consistency.min_executed`` of them, self-consistency among them; with fewer, an answer
is kept when it executes, is grounded, is not degenerate and gives the result of
``min_confirmations`` of the first teacher's executed answers (``unconfirmed_single`` otherwise),
or alone with ``trust_single``.
Answers go through the response cache like the first teacher's, so a resumed stage asks nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from fastdistill_assets.config.models import DecodeProfile, EscalateConfig, GatesConfig
from fastdistill_assets.core.hashing import sha256_text
from fastdistill_assets.gates.consistency import DEGENERATE, TOO_FEW, apply_consistency
from fastdistill_assets.teacher.candidates import (
    CARRIED,
    TeacherAccount,
    candidate_frame,
)
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.teacher.generation import (
    GenerationRequest,
    GenerationResult,
    Generator,
)

UNCONFIRMED = "unconfirmed_single"
ESCALATED = "escalated"
CALIBRATION_ONLY = "calibration_only"   # an escalated answer to a labeled question: measured, never its label


def label_candidates(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows that stand for a label: all but the ``calibration_only`` ones, which exist only to
    measure the escalation (the quality report's rates, examples and exports leave them out)."""
    return frame.filter(pl.col("reject_reason").fill_null("") != CALIBRATION_ONLY)


def unsettled_samples(frame: pl.DataFrame, reasons: Sequence[str], unexecuted: bool = False) -> list[str]:
    """The gold-free samples with no kept candidate and a candidate rejected for one of ``reasons``
    (with ``unexecuted``, a sample none of whose candidates executed counts as ``too_few_executed``),
    in their order in ``frame``. Reads sample_id, gold_sql, kept, reject_reason, result_signature."""
    nothing_executed = pl.col("result_signature").is_null().all() & pl.lit(unexecuted and TOO_FEW in reasons)
    per_sample = (frame.filter(pl.col("gold_sql").is_null())
                  .group_by("sample_id", maintain_order=True)
                  .agg(pl.col("kept").any().alias("kept"),
                       (pl.col("reject_reason").is_in(list(reasons)).any() | nothing_executed).alias("unsettled")))
    return per_sample.filter(~pl.col("kept") & pl.col("unsettled"))["sample_id"].to_list()


def escalated_candidate_id(sample_id: str, index: int) -> str:
    return sha256_text(f"{sample_id}:escalated:{index}")


def escalation_requests(frame: pl.DataFrame, sample_ids: Sequence[str], answers: int,
                        first_index: int) -> tuple[list[GenerationRequest], list[dict[str, Any]]]:
    """``answers`` requests per sample with the sample's own prompt, and the fields each new
    candidate carries (its generation_index counts on from ``first_index``)."""
    wanted = set(sample_ids)
    firsts = frame.filter(pl.col("sample_id").is_in(list(wanted))).unique("sample_id", keep="first",
                                                                          maintain_order=True)
    requests, carried = [], []
    for row in firsts.iter_rows(named=True):
        messages = json.loads(row["messages"])
        for g in range(answers):
            cid = escalated_candidate_id(row["sample_id"], g)
            requests.append(GenerationRequest(cid, messages, row["prompt_hash"], g))
            carried.append({**{k: row[k] for k in CARRIED}, "candidate_id": cid, "generation_index": first_index + g,
                            "prompt_hash": row["prompt_hash"], "messages": row["messages"]})
    return requests, carried


def decide_escalated(escalated: pl.DataFrame, first: pl.DataFrame, gates: GatesConfig,
                     escalate: EscalateConfig) -> pl.DataFrame:
    """The gold-free verdicts of the escalated candidates (``escalated``: gated, before consistency),
    given the first teacher's gated candidates of the same samples (``first``)."""
    if escalate.num_generations >= gates.consistency.min_executed:
        return apply_consistency(escalated, gates.consistency)
    confirmations = (first.filter(pl.col("result_signature").is_not_null())
                     .group_by("sample_id", "result_signature").len())
    confirmed = set(confirmations.filter(pl.col("len") >= escalate.min_confirmations)
                    .select(pl.concat_str("sample_id", "result_signature", separator="|")).to_series().to_list())
    reasons = []
    for sample_id, reason, signature, degenerate in escalated.select(
            "sample_id", "reject_reason", "result_signature", "result_degenerate").iter_rows():
        if reason is None and degenerate and gates.consistency.degenerate_result == "reject":
            reason = DEGENERATE
        elif reason is None and not escalate.trust_single and f"{sample_id}|{signature}" not in confirmed:
            reason = UNCONFIRMED
        reasons.append(reason)
    return escalated.with_columns(pl.Series("reject_reason", reasons, pl.String),
                                  pl.lit(None, pl.Float64).alias("agreement"))


@dataclass
class EscalationSummary:
    """One chunk's escalation: gold-free samples asked, those kept thanks to it, labeled samples asked
    to calibrate, and the teacher's account (both kinds of request)."""

    samples: int = 0
    kept: int = 0
    account: TeacherAccount = field(default_factory=TeacherAccount)
    model: str | None = None
    calibration_samples: int = 0   # labeled samples asked only to measure the escalated labels

    def to_json(self) -> dict[str, Any]:
        return {"samples": self.samples, "kept": self.kept, "account": self.account.to_json(), "model": self.model,
                "calibration_samples": self.calibration_samples}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EscalationSummary:
        return cls(data["samples"], data["kept"], TeacherAccount.from_json(data["account"]), data["model"],
                   data["calibration_samples"])


class Escalator:
    """The escalation teacher for a stage: a gateway session opened on first use (a local
    provider's server starts only when some sample needs it) and closed with the stage."""

    def __init__(self, gateway: ProviderGateway, escalate: EscalateConfig, decode: DecodeProfile) -> None:
        self.gateway, self.escalate = gateway, escalate
        # escalated answers count on after the first teacher's most (an adaptive run's too)
        self.first_index = decode.num_generations
        # one answer: the stronger teacher's greedy one (reproducible); several: sampled like the first's
        self.decode = decode.model_copy(update={
            "name": f"{decode.name}-escalate", "num_generations": escalate.num_generations,
            **({"temperature": 0.0} if escalate.num_generations == 1 else {})})
        self._stack = contextlib.ExitStack()
        self._generator: Generator | None = None

    def generate(self, requests: Sequence[GenerationRequest]) -> tuple[list[GenerationResult], TeacherAccount, str]:
        """The answers (cached or fresh), their account and the model that answered."""
        if self._generator is None:
            self._generator = self._stack.enter_context(self.gateway.session(
                self.escalate.provider, self.escalate.model, self.decode, overrides=self.escalate.endpoint_overrides()))
        started, calls_before, fallbacks_before = time.perf_counter(), self._generator.calls, self._generator.n_fallbacks
        results = self._generator.run(requests)
        account = TeacherAccount().add(results, time.perf_counter() - started, self._generator.calls - calls_before,
                                       self._generator.n_fallbacks - fallbacks_before)
        return results, account, self._generator.settings.model

    def frame(self, requests: Sequence[GenerationRequest], carried: list[dict[str, Any]]) -> tuple[pl.DataFrame,
                                                                                                   TeacherAccount, str]:
        """The escalated candidates as teacher_candidates rows, their account and model."""
        results, account, model = self.generate(requests)
        return candidate_frame(carried, results, self.escalate.provider, model), account, model

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Escalator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
