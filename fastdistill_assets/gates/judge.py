"""Ask the LLM judge about candidates that executed (through the provider gateway)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from fastdistill_assets.config.loading import ConfigError
from fastdistill_assets.config.models import DecodeProfile, JudgeGates, TeacherConfig
from fastdistill_assets.core.judge_format import (
    judge_messages,
    parse_judge_score,
    preview_rows,
)
from fastdistill_assets.core.prompt_format import prompt_hash
from fastdistill_assets.gates.select import JudgeScores
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.teacher.generation import GenerationRequest

JUDGE_DECODE = DecodeProfile(name="judge", temperature=0.0, max_tokens=16, num_generations=1)
CANNOT_JUDGE = ("student",)   # providers that only write SQL: a trained student answers no judge prompt


@dataclass(frozen=True)
class JudgeEndpoint:
    """Who judges: a gateway provider, its model (None: the provider's) and the run's endpoint
    overrides (used only when the judge is the run's teacher provider)."""

    provider: str
    model: str | None
    overrides: dict[str, Any] | None


def judge_endpoint(config: JudgeGates, teacher: TeacherConfig) -> JudgeEndpoint:
    """The judge's provider: ``judge.provider``, or with none the run's teacher provider at the run's
    endpoint. Used by run_judge and by preflight, so a run that cannot judge is refused before it starts.

    Raises:
        ConfigError: the provider chosen cannot judge (a student).
    """
    provider = config.provider or teacher.provider
    if provider in CANNOT_JUDGE:
        source = "judge.provider is" if config.provider else "judge.provider is null and the teacher provider is"
        raise ConfigError(f"quality_gates.yaml: {source} {provider!r}, which cannot judge: set judge.provider "
                          "in quality_gates.yaml to a teacher provider (e.g. embedded)")
    return JudgeEndpoint(provider, config.model, None if config.provider else teacher.endpoint_overrides())


def judge_requests(frame: pl.DataFrame) -> list[GenerationRequest]:
    """One judge request per candidate that executed, showing it the result's first rows (``[]``
    for an empty result); nothing for the rest (short-circuit)."""
    requests = []
    for row in frame.filter(pl.col("exec_ok").fill_null(False)).iter_rows(named=True):
        messages = judge_messages(row["question"], row["schema"], row["cleaned_sql"],
                                  preview_rows(row["result_preview"]))
        requests.append(GenerationRequest(row["candidate_id"], messages, prompt_hash(messages)))
    return requests


def run_judge(frame: pl.DataFrame, gateway: ProviderGateway, config: JudgeGates,
              teacher: TeacherConfig) -> tuple[JudgeScores, int]:
    """Scores by candidate_id, and the number of calls made (cached verdicts cost none).

    Raises:
        ConfigError: the judge's provider cannot judge (see :func:`judge_endpoint`).
    """
    endpoint = judge_endpoint(config, teacher)
    requests = judge_requests(frame)
    if not requests:
        return {}, 0
    results, _, calls = gateway.generate(requests, endpoint.provider, endpoint.model, JUDGE_DECODE,
                                         concurrency=config.concurrency, overrides=endpoint.overrides)
    scores = {}
    for result in results:
        score, reason = parse_judge_score(result.content) if result.error is None else (None, "judge_call_failed")
        scores[result.request_id] = (score, reason)
    return scores, calls
