"""Inference plane asset: teacher_candidates (a sharded stage, see ``assets.sharding``)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.assets.sharding import (ShardedStage, StageStep, row_chunks, sharded_asset, stage_metadata,
                                                stage_span_s)
from fastdistill_assets.chunks import ChunkedFrame, ChunkSpool, ChunkWork
from fastdistill_assets.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.storage import StageScan
from fastdistill_assets.teacher.candidates import CANDIDATE_SCHEMA, TeacherAccount, generate_part


@contextmanager
def _generate(step: StageStep) -> Iterator[ChunkWork]:
    config, context = step.frozen.config, step.context
    with step.teacher.session(config.teacher.provider, config.teacher.model, config.decode,
                              overrides=config.teacher.endpoint_overrides()) as generator:
        def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
            frame, account = generate_part(chunk, config, generator, config.teacher.provider)
            context.log.info(f"teacher: chunk {index} done ({frame.height} candidates)")
            return frame, {"account": account.to_json(), "model": generator.settings.model}
        yield work


def _publish(step: StageStep, spool: ChunkSpool, count: int) -> ChunkedFrame:
    provider = step.frozen.config.teacher.provider
    account, models = TeacherAccount(), set()
    for index in range(count):
        summary = spool.summary(index)
        account.merge(TeacherAccount.from_json(summary["account"]))
        models.add(summary["model"])
    account.wall_s = stage_span_s(spool, count)  # the rates over the stage's span (shards run side by side)
    acc = account.metadata(step.teacher.prices(provider))
    step.context.add_output_metadata({
        **stage_metadata(step, spool, count, account.requests, account.fresh_latencies_ms),
        **{k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in acc.items()},
        "provider": provider, "model": ", ".join(sorted(models)),
    })
    return ChunkedFrame(spool.parts(count), schema=CANDIDATE_SCHEMA, spool=spool)


def _depends_on(step: StageStep, canonical: StageScan | None) -> dict[str, Any]:
    config = step.frozen.config
    return {"config": step.frozen.config_hash, "rows": config.scale.chunk_rows,
            "canonical": canonical.manifest.get("content_hash") if canonical else None,
            # the model a null ``teacher.model`` reaches is the gateway's default, outside the run config
            "teacher": step.teacher.teacher_identity(config.teacher.provider, config.teacher.model,
                                                     config.teacher.endpoint_overrides())}


TEACHER_STAGE = ShardedStage(
    name="teacher_candidates",
    chunks=row_chunks(lambda frozen: frozen.config.scale.chunk_rows),
    depends_on=_depends_on,
    work=_generate,
    finish=_publish,
    uses_teacher=True,
)

teacher_candidates = sharded_asset(TEACHER_STAGE, "canonical", pool=TEACHER_POOL, partitions_def=run_partitions,
                                   tags={"plane": "teacher"}, kinds={"openai"}, description="""
One row per (sample, generation) from the teacher; failures are rows with `error` set.

Streams: canonical is read in chunks of `scale.chunk_rows` samples, and each chunk's candidates
are written as a part as soon as they are back, so memory stays bounded and a killed step
resumes from the parts it finished (the response cache covers the chunk in flight). With
`scale.shards` K the chunks are spread over K Dagster steps (`teacher_candidates_shard`).

Reads canonical: sample_id, split, question, evidence, schema, sample_rows, gold_sql, db_path, dialect.
Writes: candidate_id, sample_id, generation_index, prompt_hash, messages, raw_output, provider,
model, decode_profile, prompt_tokens, completion_tokens, latency_ms, attempts, cache_hit,
retries, error, error_detail, plus the canonical fields the gates need.
""".strip())
