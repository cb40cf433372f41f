"""canonical -> teacher requests -> teacher_candidates rows (pure functions)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from fastdistill_assets.config.models import RunConfig
from fastdistill_assets.core.hashing import sha256_text
from fastdistill_assets.core.prompt_format import build_messages, prompt_hash
from fastdistill_assets.core.timing import percentiles
from fastdistill_assets.teacher.budget import BUDGET_EXHAUSTED
from fastdistill_assets.teacher.generation import (
    GenerationRequest,
    GenerationResult,
    Generator,
)
from fastdistill_assets.teacher.provider_config import Prices, dollars

CARRIED = ["sample_id", "split", "db_id", "question", "schema", "gold_sql", "db_path", "dialect", "decode_profile"]


def candidate_id(sample_id: str, generation_index: int) -> str:
    return sha256_text(f"{sample_id}:{generation_index}")


def build_requests(canonical: pl.DataFrame, config: RunConfig) -> tuple[list[GenerationRequest], list[dict[str, Any]]]:
    """One request per (sample, generation); rows carry what the gates need downstream."""
    rows = canonical.filter(pl.col("split").is_in(config.teacher.splits))
    requests, carried = [], []
    for rec in rows.iter_rows(named=True):
        messages = build_messages(rec["question"], rec["schema"], rec["sample_rows"], config.recipe.rationale,
                                  rec["evidence"], rec["dialect"])
        p_hash = prompt_hash(messages)
        for g in range(config.decode.num_generations):
            cid = candidate_id(rec["sample_id"], g)
            requests.append(GenerationRequest(cid, messages, p_hash, g))
            carried.append({**{k: rec[k] for k in CARRIED}, "candidate_id": cid, "generation_index": g,
                            "prompt_hash": p_hash, "messages": json.dumps(messages, ensure_ascii=False)})
    return requests, carried


CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    **{c: pl.String() for c in CARRIED}, "candidate_id": pl.String(), "generation_index": pl.Int32(),
    "prompt_hash": pl.String(), "messages": pl.String(), "provider": pl.String(), "model": pl.String(),
    "raw_output": pl.String(), "prompt_tokens": pl.Int64(), "completion_tokens": pl.Int64(),
    "cached_tokens": pl.Int64(),
    "latency_ms": pl.Float64(), "attempts": pl.Int32(), "cache_hit": pl.Boolean(), "retries": pl.String(),
    "error": pl.String(), "error_detail": pl.String(),
}


def candidate_frame(carried: list[dict[str, Any]], results: list[GenerationResult], provider: str,
                    model: str) -> pl.DataFrame:
    """Join carried fields with results (same order, one each), in :data:`CANDIDATE_SCHEMA`."""
    rows = []
    for base, res in zip(carried, results, strict=True):
        assert base["candidate_id"] == res.request_id
        rows.append({**base, "provider": provider, "model": model, "raw_output": res.content,
                     "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                     "cached_tokens": res.cached_tokens,
                     "latency_ms": res.latency_ms, "attempts": res.attempts, "cache_hit": res.cache_hit,
                     "retries": json.dumps(res.retries_by_reason), "error": res.error,
                     "error_detail": res.error_detail})
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)


def generate_part(canonical: pl.DataFrame, config: RunConfig, generator: Generator,
                  provider: str) -> tuple[pl.DataFrame, TeacherAccount]:
    """One chunk of teacher_candidates: the requests of ``canonical``'s rows through ``generator``
    (a gateway session), and the chunk's accounting."""
    requests, carried = build_requests(canonical, config)
    started, calls_before, fallbacks_before = time.perf_counter(), generator.calls, generator.n_fallbacks
    results = generator.run(requests) if requests else []
    account = TeacherAccount().add(results, time.perf_counter() - started, generator.calls - calls_before,
                                   generator.n_fallbacks - fallbacks_before)
    return candidate_frame(carried, results, provider, generator.settings.model), account


def without_unasked(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """``frame`` without the questions the budget left incomplete (any answer ``budget_exhausted``:
    their paid answers stay in the response cache for when the budget is raised), and how many
    questions that is."""
    short = frame.filter(pl.col("error") == BUDGET_EXHAUSTED)["sample_id"].unique()
    if short.len() == 0:
        return frame, 0
    return frame.filter(~pl.col("sample_id").is_in(short.implode())), short.len()


def answers_cost(frame: pl.DataFrame, prices: Prices) -> float:
    """What ``frame``'s answers cost at ``prices`` (every answer at the tokens it was bought with,
    a cached one too); 0.0 without prices."""
    sums = frame.select(pl.col("prompt_tokens", "completion_tokens", "cached_tokens").fill_null(0).sum()).row(0)
    return dollars(int(sums[0]), int(sums[1]), prices, int(sums[2])) or 0.0


@dataclass
class TeacherAccount:
    """The teacher's accounting, built chunk by chunk (:meth:`add`) and mergeable across chunks
    that were produced by earlier attempts or other shards (:meth:`merge`, JSON round trip with
    :meth:`to_json` / :meth:`from_json`); :meth:`metadata` gives the stage's figures.

    Tokens, cost, latencies and ``teacher_tokens_per_sec`` / ``teacher_output_tokens_per_sec``
    count fresh (uncached, successful) calls over the generation wall time (summed over the
    chunks); the two rates are left out when no fresh call succeeded (a fully cached re-run
    measures no teacher). ``teacher_cached_share`` is cache hits / requests (0.0 for no
    requests), and ``teacher_tokens_per_sec_cold``, present when some answers came from the
    cache, is the throughput of the run that produced them: their tokens / (last arrival -
    earliest request), a request time being its arrival minus its latency. Answers produced by
    several runs (a resumed run) count the pause between them, so the figure is then a lower bound.
    ``cached_input_tokens`` are the fresh calls' prompt tokens the provider served from its prompt
    cache (priced at its cached input price); ``n_fallbacks`` the answers asked separately after an
    ``n`` reply came back short; ``unasked`` the answers not asked because the budget was reached
    (not counted in ``requests``).
    """

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    wall_s: float = 0.0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    n_fallbacks: int = 0
    unasked: int = 0          # answers not asked: the budget (``teacher.budget_usd``) was reached
    batches: int = 0          # Batch API: batches waited on, of them resumed from an earlier step, and
    batches_resumed: int = 0  # requests resubmitted after failing or expiring
    batch_resubmitted: int = 0
    fresh: int = 0
    fresh_latencies_ms: list[float] = field(default_factory=list)
    cold_tokens: int = 0
    cold_start: float | None = None
    cold_end: float | None = None

    def add(self, results: list[GenerationResult], wall_s: float = 0.0, calls: int = 0,
            n_fallbacks: int = 0) -> TeacherAccount:
        unasked = sum(1 for r in results if r.error == BUDGET_EXHAUSTED)
        self.unasked += unasked
        self.requests += len(results) - unasked
        self.calls += calls
        self.n_fallbacks += n_fallbacks
        self.wall_s += wall_s
        errors, retries = Counter(self.errors_by_reason), Counter(self.retries_by_reason)
        for r in results:
            if r.error == BUDGET_EXHAUSTED:
                continue
            retries.update(r.retries_by_reason)
            if r.error:
                errors[r.error] += 1
            if r.cache_hit:
                self.cache_hits += 1
                if r.cached_at is not None:
                    start = r.cached_at - (r.latency_ms or 0.0) / 1000
                    self.cold_start = start if self.cold_start is None else min(self.cold_start, start)
                    self.cold_end = r.cached_at if self.cold_end is None else max(self.cold_end, r.cached_at)
                    self.cold_tokens += r.prompt_tokens + r.completion_tokens
            elif r.error is None:
                self.fresh += 1
                self.input_tokens += r.prompt_tokens
                self.output_tokens += r.completion_tokens
                self.cached_input_tokens += r.cached_tokens
                if r.latency_ms is not None:
                    self.fresh_latencies_ms.append(r.latency_ms)
        self.errors_by_reason, self.retries_by_reason = dict(errors), dict(retries)
        return self

    def merge(self, other: TeacherAccount) -> TeacherAccount:
        for name in ("requests", "calls", "cache_hits", "wall_s", "input_tokens", "output_tokens",
                     "cached_input_tokens", "n_fallbacks", "unasked", "batches", "batches_resumed",
                     "batch_resubmitted", "fresh", "cold_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors_by_reason = dict(Counter(self.errors_by_reason) + Counter(other.errors_by_reason))
        self.retries_by_reason = dict(Counter(self.retries_by_reason) + Counter(other.retries_by_reason))
        self.fresh_latencies_ms += other.fresh_latencies_ms
        starts = [v for v in (self.cold_start, other.cold_start) if v is not None]
        ends = [v for v in (self.cold_end, other.cold_end) if v is not None]
        self.cold_start, self.cold_end = (min(starts) if starts else None), (max(ends) if ends else None)
        return self

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeacherAccount:
        return cls(**data)

    def cold_tokens_per_sec(self) -> float | None:
        if self.cold_start is None or self.cold_end is None:
            return None
        span = self.cold_end - self.cold_start
        return round(self.cold_tokens / span, 2) if span > 0 else None

    def metadata(self, prices: Prices) -> dict[str, Any]:
        acc: dict[str, Any] = {
            "requests": self.requests, "calls": self.calls, "cache_hits": self.cache_hits,
            "n_fallbacks": self.n_fallbacks, "unasked": self.unasked,
            **({"batches": self.batches, "batches_resumed": self.batches_resumed,
                "batch_resubmitted": self.batch_resubmitted} if self.batches else {}),
            "errors": sum(self.errors_by_reason.values()),
            "errors_by_reason": self.errors_by_reason, "retries_by_reason": self.retries_by_reason,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "teacher_cached_share": round(self.cache_hits / self.requests, 4) if self.requests else 0.0,
            "generation_wall_s": round(self.wall_s, 3),
            **{f"latency_{k}": v for k, v in percentiles(self.fresh_latencies_ms).items()},
        }
        if self.fresh and self.wall_s > 0:
            acc["teacher_tokens_per_sec"] = round((self.input_tokens + self.output_tokens) / self.wall_s, 2)
            acc["teacher_output_tokens_per_sec"] = round(self.output_tokens / self.wall_s, 2)
        cold = self.cold_tokens_per_sec()
        if cold is not None:
            acc["teacher_tokens_per_sec_cold"] = cold
        cost = dollars(self.input_tokens, self.output_tokens, prices, self.cached_input_tokens)
        if cost is not None:
            acc["cost_usd"] = cost
        return acc


def accounting(results: list[GenerationResult], wall_s: float, calls: int, prices: Prices) -> dict[str, Any]:
    """The accounting of one batch of results (see :class:`TeacherAccount`)."""
    return TeacherAccount().add(results, wall_s, calls).metadata(prices)
