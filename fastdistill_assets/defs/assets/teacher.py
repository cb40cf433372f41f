"""Inference plane asset: teacher_candidates (a sharded stage, see ``assets.sharding``)."""

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.core.processes import step_workers
from fastdistill_assets.defs.assets.sharding import (
    ShardedStage,
    StageStep,
    row_chunks,
    sharded_asset,
    stage_metadata,
    stage_span_s,
)
from fastdistill_assets.defs.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.gates.adaptive import (
    SamplingSummary,
    SettleRule,
    sample_adaptively,
)
from fastdistill_assets.gates.pipeline import GateWorkers, gate_workers
from fastdistill_assets.store.chunks import ChunkedFrame, ChunkSpool, ChunkWork
from fastdistill_assets.store.storage import StageScan
from fastdistill_assets.teacher.batch import BatchOptions
from fastdistill_assets.teacher.budget import SpendLimit
from fastdistill_assets.teacher.candidates import (
    CANDIDATE_SCHEMA,
    TeacherAccount,
    answers_cost,
    generate_part,
    without_unasked,
)
from fastdistill_assets.teacher.progress import TeacherProgress
from fastdistill_assets.teacher.provider_config import Prices


def _spend_limit(step: StageStep) -> SpendLimit | None:
    """This step's part of ``teacher.budget_usd``. Where no other step of the stage can run beside
    it (one shard, the merge, or a teacher pool of one slot): what the stage's finished parts did not
    spend. Where shards run side by side: an equal share of the budget, less what this shard's
    finished parts spent."""
    budget, shards = step.frozen.config.teacher.budget_usd, step.frozen.config.scale.shards
    if budget is None:
        return None
    done = step.spool.done_summaries() if step.spool else []
    side_by_side = step.context.instance.get_concurrency_config().pool_config.default_pool_limit
    if step.shard is None or shards == 1 or side_by_side == 1:
        left = budget - sum(s.get("spent_usd", 0.0) for s in done)
    else:
        left = budget / shards - sum(s.get("spent_usd", 0.0) for s in done if s.get("by") == f"shard-{step.shard}")
    return SpendLimit(max(0.0, left), _prices(step))


def _prices(step: StageStep) -> Prices:
    """The first teacher's prices, through the Batch API where the run uses it."""
    teacher = step.frozen.config.teacher
    return step.teacher.prices(teacher.provider, batch=teacher.mode == "batch")


def _batch(step: StageStep) -> BatchOptions | None:
    """The Batch API's options where the run uses it: batch ids recorded in the run's work folder."""
    teacher = step.frozen.config.teacher
    if teacher.mode != "batch":
        return None
    return BatchOptions(step.run_config.work_dir(step.context, "teacher_batches"), poll_s=teacher.batch_poll_s)


def _planned_answers(step: StageStep) -> tuple[int, int]:
    """(answers this step's chunks ask for, of them in chunks finished already): the questions
    of the teacher's splits × ``decode.num_generations`` (adaptive sampling: at most that)."""
    config = step.frozen.config
    if step.source is None or step.spool is None:
        return 0, 0
    asked = step.source.collect(columns=["split"])["split"].is_in(config.teacher.splits)
    rows, shards = config.scale.chunk_rows, config.scale.shards
    total = done = 0
    for index, start in enumerate(range(0, asked.len(), rows)):
        if step.shard is not None and index % shards != step.shard:
            continue
        questions = int(asked.slice(start, rows).sum())
        total += questions
        done += questions if step.spool.done(index) else 0
    return total * config.decode.num_generations, done * config.decode.num_generations


@contextmanager
def _generate(step: StageStep) -> Iterator[ChunkWork]:
    config, context, decode = step.frozen.config, step.context, step.frozen.config.decode
    prices = _prices(step)
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(TeacherProgress(*_planned_answers(step), log=context.log.info,
                                                       every_s=step.run_config.progress_every_s))
        generator = stack.enter_context(step.teacher.session(config.teacher.provider, config.teacher.model, decode,
                                                             progress=progress.call_progress,
                                                             overrides=config.teacher.endpoint_overrides(),
                                                             spend=_spend_limit(step), batch=_batch(step)))
        if decode.adaptive:   # the answers are gated as they arrive, to stop asking once a question is settled
            workers = gate_workers(step_workers(config.scale.workers, config.scale.shards),
                                   config.scale.chunk_rows * decode.initial_generations)
            runner = stack.enter_context(GateWorkers(workers, step.frozen.gates.execution))

        batches = [0, 0, 0]   # the generator's batch counts when the chunk began

        def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
            sampling = None
            progress.chunk_started()
            if decode.adaptive:
                rule = SettleRule(step.frozen.gates, decode.num_generations, decode.stop_margin,
                                  config.recipe.rationale, runner)
                frame, account, summary = sample_adaptively(chunk, config, generator, config.teacher.provider, rule)
                sampling = summary.to_json()
            else:
                frame, account = generate_part(chunk, config, generator, config.teacher.provider)
            spent = answers_cost(frame, prices)
            progress.chunk_finished(frame.height if sampling is None else int(sampling["answers_fixed"]),
                                    int(frame["error"].is_not_null().sum()))
            frame, unasked_questions = without_unasked(frame)
            context.log.debug(f"teacher: chunk {index} written ({frame.height} candidates"
                              + (f" of {sampling['answers_fixed']}, {sampling['rounds']} rounds" if sampling else "")
                              + (f"; budget reached, {unasked_questions} questions not asked)" if unasked_questions
                                 else ")"))
            account.batches, account.batches_resumed = generator.batches - batches[0], generator.batches_resumed - batches[1]
            account.batch_resubmitted = generator.batch_resubmitted - batches[2]
            batches[:] = [generator.batches, generator.batches_resumed, generator.batch_resubmitted]
            return frame, {"account": account.to_json(), "model": generator.settings.model, "sampling": sampling,
                           "spent_usd": spent, "unasked_questions": unasked_questions}
        yield work


def _publish(step: StageStep, spool: ChunkSpool, count: int) -> ChunkedFrame:
    provider = step.frozen.config.teacher.provider
    account, models, sampling = TeacherAccount(), set(), SamplingSummary()
    spent, unasked_questions = 0.0, 0
    for index in range(count):
        summary = spool.summary(index)
        account.merge(TeacherAccount.from_json(summary["account"]))
        models.add(summary["model"])
        if summary.get("sampling"):
            sampling.merge(summary["sampling"])
        spent += summary.get("spent_usd", 0.0)
        unasked_questions += summary.get("unasked_questions", 0)
    account.wall_s = stage_span_s(spool, count)  # the rates over the stage's span (shards run side by side)
    acc = account.metadata(_prices(step))
    step.context.add_output_metadata({
        **stage_metadata(step, spool, count, account.requests, account.fresh_latencies_ms),
        **{k: (dg.MetadataValue.json(v) if isinstance(v, dict) else v) for k, v in acc.items()},
        "provider": provider, "model": ", ".join(sorted(models)),
        **(sampling.metadata() if step.frozen.config.decode.adaptive else {}),
        **_budget_metadata(step, spent, account.unasked, unasked_questions),
    })
    return ChunkedFrame(spool.parts(count), schema=CANDIDATE_SCHEMA, spool=spool)


def _budget_metadata(step: StageStep, spent: float, unasked: int, unasked_questions: int) -> dict[str, Any]:
    """``budget_*`` figures, and where the budget stopped the teacher, ``budget_note``: the one line
    the CLI prints."""
    budget = step.frozen.config.teacher.budget_usd
    if budget is None:
        return {}
    meta: dict[str, Any] = {"budget_usd": budget, "budget_spent_usd": round(spent, 6),
                            "budget_exhausted": unasked > 0, "budget_unasked_answers": unasked,
                            "budget_unasked_questions": unasked_questions}
    if unasked:
        run_id = step.frozen.run_id
        meta["budget_note"] = (f"teacher budget ${budget:g} reached (${spent:.4f} spent): {unasked_questions} "
                               f"questions ({unasked} answers) not asked; raise it with `fastdistill run budget "
                               f"{run_id} USD` and materialize again (only what is missing is asked)")
    return meta


def _depends_on(step: StageStep, canonical: StageScan | None) -> dict[str, Any]:
    config = step.frozen.config
    return {"config": step.frozen.config_hash, "rows": config.scale.chunk_rows,
            "canonical": canonical.manifest.get("content_hash") if canonical else None,
            "gates": step.frozen.gates_hash if config.decode.adaptive else None,   # adaptive: the stopping rule's
            "budget": config.teacher.budget_usd,   # not in the config hash; a raised budget asks again
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

With `decode.adaptive` a question gets `decode.initial_generations` answers and more, one per
round, only while the gates say it is not settled (`gates.adaptive`): the answers are gated as
they arrive, read-only with the run's limits, and the rows are those a fixed run would have for
the answers drawn. The metadata's `adaptive_*` figures say how many were drawn of how many.

Reads canonical: sample_id, split, question, evidence, schema, sample_rows, gold_sql, db_path, dialect.
Writes: candidate_id, sample_id, generation_index, prompt_hash, messages, raw_output, provider,
model, decode_profile, prompt_tokens, completion_tokens, latency_ms, attempts, cache_hit,
retries, error, error_detail, plus the canonical fields the gates need.
""".strip())
