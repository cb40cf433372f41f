"""Inference plane asset: teacher_candidates."""

import time

import dagster as dg
import polars as pl

from fastdistill_assets.teacher.candidates import accounting, build_requests, candidate_frame
from fastdistill_assets.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.resources import RunConfigResource, step_errors
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.timing import StageTimer


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "teacher"}, kinds={"openai"},
          pool=TEACHER_POOL)
def teacher_candidates(context: dg.AssetExecutionContext, run_config: RunConfigResource,
                       teacher: ProviderGateway, canonical: pl.DataFrame) -> pl.DataFrame:
    """One row per (sample, generation) from the teacher; failures are rows with `error` set.

    Reads canonical: sample_id, split, question, evidence, schema, sample_rows, gold_sql, db_path, dialect.
    Writes: candidate_id, sample_id, generation_index, prompt_hash, messages, raw_output, provider,
    model, decode_profile, prompt_tokens, completion_tokens, latency_ms, attempts, cache_hit,
    retries, error, error_detail, plus the canonical fields the gates need.
    """
    timer = StageTimer()
    config = run_config.for_partition(context).config
    requests, carried = build_requests(canonical, config)
    provider = config.teacher.provider

    def progress(done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed else 0.0
        eta = (total - done) / rate if rate else float("inf")
        context.log.info(f"teacher: {done}/{total} done, {rate:.1f}/s, ETA {eta:.0f}s")

    started = time.perf_counter()
    with step_errors():
        results, endpoint, calls = teacher.generate(requests, provider, config.teacher.model, config.decode, progress,
                                                    overrides=config.teacher.endpoint_overrides())
    wall = time.perf_counter() - started
    frame = candidate_frame(carried, results, provider, endpoint.model)
    acc = accounting(results, wall, calls, teacher.prices(provider))
    context.add_output_metadata({
        **timer.metadata(rows=frame.height, row_latencies_ms=frame["latency_ms"].drop_nulls().to_list()),
        **{k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in acc.items()},
        "provider": provider, "model": endpoint.model,
    })
    return frame
