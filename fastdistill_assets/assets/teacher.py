"""Inference plane asset: teacher_candidates (a sharded stage, see ``assets.sharding``)."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import polars as pl

from fastdistill_assets.assets.sharding import ShardedStage, sharded_asset, stage_metadata, stage_span_s
from fastdistill_assets.chunks import ChunkedFrame, ChunkSpool, ChunkWork
from fastdistill_assets.config import FrozenRun
from fastdistill_assets.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.teacher.candidates import CANDIDATE_SCHEMA, TeacherAccount, generate_part
from fastdistill_assets.teacher.gateway import ProviderGateway


@contextmanager
def _generate(context: dg.OpExecutionContext, frozen: FrozenRun, teacher: ProviderGateway) -> Iterator[ChunkWork]:
    config = frozen.config
    with teacher.session(config.teacher.provider, config.teacher.model, config.decode,
                         overrides=config.teacher.endpoint_overrides()) as generator:
        def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
            frame, account = generate_part(chunk, config, generator, config.teacher.provider)
            context.log.info(f"teacher: chunk {index} done ({frame.height} candidates)")
            return frame, {"account": account.to_json(), "model": generator.settings.model}
        yield work


def _publish(context: dg.OpExecutionContext, frozen: FrozenRun, teacher: ProviderGateway, spool: ChunkSpool,
             count: int) -> ChunkedFrame:
    provider = frozen.config.teacher.provider
    account, models = TeacherAccount(), set()
    for index in range(count):
        summary = spool.summary(index)
        account.merge(TeacherAccount.from_json(summary["account"]))
        models.add(summary["model"])
    account.wall_s = stage_span_s(spool, count)  # the rates over the stage's span (shards run side by side)
    acc = account.metadata(teacher.prices(provider))
    context.add_output_metadata({
        **stage_metadata(spool, count, account.requests, account.fresh_latencies_ms, frozen),
        **{k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in acc.items()},
        "provider": provider, "model": ", ".join(sorted(models)),
    })
    return ChunkedFrame(spool.parts(count), schema=CANDIDATE_SCHEMA, spool=spool)


TEACHER_STAGE = ShardedStage(
    name="teacher_candidates",
    rows=lambda frozen: frozen.config.scale.chunk_rows,
    key=None,
    depends_on=lambda frozen, canonical: {"config": frozen.config_hash, "rows": frozen.config.scale.chunk_rows,
                                          "canonical": canonical.manifest.get("content_hash")},
    work=_generate,
    finish=_publish,
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
