"""Ask the LLM judge about candidates that executed (through the provider gateway)."""

from __future__ import annotations

import json

import polars as pl

from fastdistill_assets.config import DecodeProfile, JudgeGates, TeacherConfig
from fastdistill_assets.gates.judge import judge_messages, parse_judge_score
from fastdistill_assets.gates.select import JudgeScores
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.teacher.generation import GenerationRequest
from fastdistill_assets.teacher.prompts import prompt_hash

JUDGE_DECODE = DecodeProfile(name="judge", temperature=0.0, max_tokens=16)


def judge_requests(frame: pl.DataFrame) -> list[GenerationRequest]:
    """One judge request per candidate that executed; nothing for the rest (short-circuit)."""
    requests = []
    for row in frame.filter(pl.col("exec_ok").fill_null(False)).iter_rows(named=True):
        preview = json.loads(json.dumps(row["result_preview"]))
        messages = judge_messages(row["question"], row["schema"], row["cleaned_sql"], [preview])
        requests.append(GenerationRequest(row["candidate_id"], messages, prompt_hash(messages)))
    return requests


def run_judge(frame: pl.DataFrame, gateway: ProviderGateway, config: JudgeGates,
              teacher: TeacherConfig) -> tuple[JudgeScores, int]:
    """Scores by candidate_id, and the number of calls made (cached verdicts cost none). With no
    judge provider of its own, the judge is the run's teacher provider at the run's endpoint."""
    requests = judge_requests(frame)
    if not requests:
        return {}, 0
    results, _, calls = gateway.generate(requests, config.provider or teacher.provider, config.model, JUDGE_DECODE,
                                         concurrency=config.concurrency,
                                         overrides=None if config.provider else teacher.endpoint_overrides())
    scores = {}
    for result in results:
        score, reason = parse_judge_score(result.content) if result.error is None else (None, "judge_call_failed")
        scores[result.request_id] = (score, reason)
    return scores, calls
