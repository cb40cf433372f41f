"""canonical -> teacher requests -> teacher_candidates rows (pure functions)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import polars as pl

from fastdistill_assets.config import RunConfig
from fastdistill_assets.hashing import sha256_text
from fastdistill_assets.teacher.generation import GenerationRequest, GenerationResult
from fastdistill_assets.prompt_format import build_messages, prompt_hash
from fastdistill_assets.timing import percentiles

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


def candidate_frame(carried: list[dict[str, Any]], results: list[GenerationResult], provider: str,
                    model: str) -> pl.DataFrame:
    """Join carried fields with results (same order, one each)."""
    rows = []
    for base, res in zip(carried, results, strict=True):
        assert base["candidate_id"] == res.request_id
        rows.append({**base, "provider": provider, "model": model, "raw_output": res.content,
                     "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                     "latency_ms": res.latency_ms, "attempts": res.attempts, "cache_hit": res.cache_hit,
                     "retries": json.dumps(res.retries_by_reason), "error": res.error,
                     "error_detail": res.error_detail})
    schema = {"generation_index": pl.Int32, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
              "latency_ms": pl.Float64, "attempts": pl.Int32, "cache_hit": pl.Boolean, "raw_output": pl.String,
              "error": pl.String, "error_detail": pl.String}
    return pl.DataFrame(rows, schema_overrides=schema) if rows else pl.DataFrame(schema={**{c: pl.String for c in CARRIED}, **schema})


def cold_tokens_per_sec(results: list[GenerationResult]) -> float | None:
    """Throughput (input + output tokens per second) of the run(s) that produced the cached answers.

    Over the cache hits that know when they arrived: their tokens / (last arrival - earliest
    request), where a request time is its arrival minus its latency: from when the first of them
    was requested to when the last came back. Answers produced by several runs (a resumed run) count the pause between them, so
    the figure is then a lower bound. None when no hit has an arrival time or the span is zero.
    """
    hits = [(r.cached_at, r) for r in results if r.cache_hit and r.cached_at is not None]
    if not hits:
        return None
    start = min(at - (r.latency_ms or 0.0) / 1000 for at, r in hits)
    span = max(at for at, _ in hits) - start
    tokens = sum(r.prompt_tokens + r.completion_tokens for _, r in hits)
    return round(tokens / span, 2) if span > 0 else None


def accounting(results: list[GenerationResult], wall_s: float, calls: int,
               prices: tuple[float | None, float | None]) -> dict[str, Any]:
    """Per-run teacher accounting for metadata.

    Tokens, cost, latencies and ``teacher_tokens_per_sec`` / ``teacher_output_tokens_per_sec``
    count this run's fresh (uncached, successful) calls over the run's wall time; the two rates
    are left out when no fresh call succeeded (a fully cached re-run measures no teacher).
    ``teacher_cached_share`` is cache hits / requests (0.0 for no requests), and
    ``teacher_tokens_per_sec_cold``, present when some answers came from the cache, is the
    throughput of the run that produced them (:func:`cold_tokens_per_sec`).
    """
    fresh = [r for r in results if not r.cache_hit and r.error is None]
    hits = sum(r.cache_hit for r in results)
    out_tokens = sum(r.completion_tokens for r in fresh)
    in_tokens = sum(r.prompt_tokens for r in fresh)
    retries: Counter[str] = Counter()
    for r in results:
        retries.update(r.retries_by_reason)
    acc: dict[str, Any] = {
        "requests": len(results), "calls": calls, "cache_hits": hits,
        "errors": sum(r.error is not None for r in results),
        "errors_by_reason": dict(Counter(r.error for r in results if r.error)),
        "retries_by_reason": dict(retries),
        "input_tokens": in_tokens, "output_tokens": out_tokens,
        "teacher_cached_share": round(hits / len(results), 4) if results else 0.0,
        "generation_wall_s": round(wall_s, 3),
        **{f"latency_{k}": v for k, v in percentiles(r.latency_ms for r in fresh).items()},
    }
    if fresh and wall_s > 0:
        acc["teacher_tokens_per_sec"] = round((in_tokens + out_tokens) / wall_s, 2)
        acc["teacher_output_tokens_per_sec"] = round(out_tokens / wall_s, 2)
    cold = cold_tokens_per_sec(results)
    if cold is not None:
        acc["teacher_tokens_per_sec_cold"] = cold
    price_in, price_out = prices
    if price_in is not None and price_out is not None:
        acc["cost_usd"] = round(in_tokens * price_in / 1e6 + out_tokens * price_out / 1e6, 6)
    return acc
