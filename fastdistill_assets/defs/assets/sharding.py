"""Sharded stages: a row-wise stage as a Dagster graph of steps over disjoint sets of its chunks.

A stage's input is cut into chunks by its ``chunks`` function: the input stage's rows
(``row_chunks``: ``chunks.rechunk``, whole samples when a ``key`` is given), its row groups, or
for ``raw``, which has no input stage, the dataset's batches. ``<stage>_plan`` fans out one
dynamic ``<stage>_shard`` step per shard
(``scale.shards`` of the run's frozen config); shard ``k`` of ``K`` produces the chunks whose
index is ``k`` mod ``K`` into the stage's :class:`~fastdistill_assets.store.chunks.ChunkSpool`, under
a per-shard lock; ``<stage>_merge`` takes the run's writer lock, makes any part that is
missing (another run of the run_id may have published the stage meanwhile, clearing the spool)
and publishes all parts as the stage's one materialization.
The chunks do not depend on ``K``, so a sharded stage equals the unsharded one row for row.

The shard steps are ordinary Dagster steps: the multiprocess executor runs them side by side
(in the ``teacher`` pool where they call a provider: raise its limit to let them), and a
Kubernetes, Docker or Celery executor spreads them over machines, given an artifacts root
every machine sees. The step outputs between the ops (shard numbers and chunk counts) go
through the ``step_io`` resource: Dagster's filesystem IO manager in ``definitions.py`` (the
instance's storage folder); a deployment over several machines gives it shared storage.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.config.models import FrozenRun
from fastdistill_assets.core.timing import percentiles
from fastdistill_assets.defs.resources import RunConfigResource, step_errors
from fastdistill_assets.store.chunks import (
    ChunkedFrame,
    ChunkSpool,
    ChunkWork,
    rechunk,
    run_chunks,
    spool_fingerprint,
)
from fastdistill_assets.store.storage import StageScan
from fastdistill_assets.teacher.gateway import ProviderGateway

STEP_IO = "step_io"


@dataclass(frozen=True)
class StageStep:
    """What a step of a sharded stage works with."""

    context: dg.OpExecutionContext
    frozen: FrozenRun
    run_config: RunConfigResource
    teacher: ProviderGateway | None  # the provider gateway, for a stage with ``uses_teacher`` only
    spool: ChunkSpool | None = None   # the stage's parts (those finished by earlier attempts and shards)
    shard: int | None = None          # which shard this step is (None: the merge)
    source: StageScan | None = None   # the input stage (None: a stage that reads the dataset itself)

    @staticmethod
    def of(context: dg.OpExecutionContext, writer: bool | None = None) -> "StageStep":
        run_config: RunConfigResource = context.resources.run_config
        return StageStep(context, run_config.enter_step(context, writer=writer), run_config,
                         getattr(context.resources, "teacher", None))  # type: ignore[arg-type]  # resources are untyped attributes


# The chunks of a stage's input, in order: given the step, the input stage (None for a stage with
# none) and which chunks the step will work on (``wanted``), so a chunk the step skips need not be made.
Chunks = Callable[[StageStep, StageScan | None, Callable[[int], bool]], Iterable[Any]]


def row_chunks(rows: Callable[[FrozenRun], int], key: str | None = None) -> Chunks:
    """Chunks of ``rows(frozen)`` rows of the input stage (whole ``key`` groups): ``chunks.rechunk``."""
    return lambda step, source, wanted: rechunk(source.row_groups(), rows(step.frozen), key)  # type: ignore[union-attr]  # a sharded stage's input is a StageScan


@dataclass(frozen=True)
class ShardedStage:
    """What makes a stage: its input's chunks, what its parts depend on, the work per chunk and
    how the parts become the stage (metadata included)."""

    name: str
    chunks: Chunks
    depends_on: Callable[[StageStep, StageScan | None], dict[str, Any]]
    work: Callable[[StageStep], AbstractContextManager[ChunkWork]]
    finish: Callable[[StageStep, ChunkSpool, int], ChunkedFrame]
    uses_teacher: bool = False  # its steps get the ``teacher`` resource (the provider gateway)


def _spool(stage: ShardedStage, step: StageStep, upstream: StageScan | None, prune: bool = False) -> ChunkSpool:
    fingerprint = spool_fingerprint(**stage.depends_on(step, upstream))
    return ChunkSpool(step.run_config.work_dir(step.context, stage.name), fingerprint, prune=prune)


def timed(work: ChunkWork, by: str, dagster_run_id: str) -> ChunkWork:
    """``work`` with its part's start and end times (epoch seconds), its maker (a shard or the
    merge) and the Dagster run that made it in the summary."""
    def run(index: int, chunk: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
        started = time.time()
        frame, summary = work(index, chunk)
        return frame, {**summary, "started": started, "ended": time.time(), "by": by, "dagster_run": dagster_run_id}
    return run


def stage_span_s(spool: ChunkSpool, count: int) -> float:
    """From the first part's start to the last part's end, over all attempts and shards (a
    resumed stage counts the pause between its attempts)."""
    summaries = [spool.summary(i) for i in range(count)]
    if not summaries:
        return 0.0
    return max(s["ended"] for s in summaries) - min(s["started"] for s in summaries)


def stage_metadata(step: StageStep, spool: ChunkSpool, count: int, rows: int,
                   row_latencies_ms: Iterable[float] = ()) -> dict[str, Any]:
    """The timing metadata of a sharded stage: its span (``timing_wall_s``), rows/s over it, row
    latency percentiles (when given), chunks, shards, how many parts the merge had to make itself
    and how many an earlier Dagster run of the run_id had made (``parts_resumed``)."""
    wall = stage_span_s(spool, count)
    summaries = [spool.summary(i) for i in range(count)]
    return {
        "timing_wall_s": round(wall, 4), **({"timing_rows_per_s": round(rows / wall, 2)} if wall else {}),
        **{f"timing_row_{k}": v for k, v in percentiles(row_latencies_ms).items()},
        "chunks": count, "shards": step.frozen.config.scale.shards,
        "parts_made_by_merge": sum(s.get("by") == "merge" for s in summaries),
        "parts_resumed": sum(s.get("dagster_run") != step.context.run_id for s in summaries),
    }


def sharded_asset(stage: ShardedStage, upstream: str | None, *, description: str, pool: str | None,
                  tags: dict[str, str], kinds: set[str], partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The stage as a graph-backed asset: plan → shard (dynamic, one step per shard) → merge.
    ``upstream``: the input stage, or None for a stage that reads the dataset itself."""
    source_in = {"source": dg.In(StageScan)} if upstream else {}
    resources = {"run_config", *(["teacher"] if stage.uses_teacher else [])}

    @dg.op(name=f"{stage.name}_plan", ins=source_in, out=dg.DynamicOut(int, io_manager_key=STEP_IO),
           required_resource_keys={"run_config"})
    def plan(context: dg.OpExecutionContext, **source: StageScan) -> Iterator[dg.DynamicOutput[int]]:
        shards = StageStep.of(context).frozen.config.scale.shards  # (``source``: runs after its stage)
        for shard in range(shards):
            yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard}")

    @dg.op(name=f"{stage.name}_shard", pool=pool, ins={**source_in, "index": dg.In(int)},
           out=dg.Out(int, io_manager_key=STEP_IO), required_resource_keys=resources)
    def shard(context: dg.OpExecutionContext, index: int, **source: StageScan) -> int:
        step = StageStep.of(context)
        shards = step.frozen.config.scale.shards
        with step.run_config.shard_lock(context, f"{stage.name}.shard-{index}-of-{shards}"), step_errors():
            spool = _spool(stage, step, source.get("source"))
            return _run_shard(stage, dataclasses.replace(step, spool=spool, shard=index, source=source.get("source")),
                              spool, index, shards, source.get("source"))

    def _run_shard(stage: ShardedStage, step: StageStep, spool: ChunkSpool, index: int, shards: int,
                   source: StageScan | None) -> int:
        with stage.work(step) as work:
            def mine(chunk: int) -> bool:
                return chunk % shards == index

            chunks = stage.chunks(step, source, lambda i: mine(i) and not spool.done(i))
            return run_chunks(spool, chunks, timed(work, f"shard-{index}", step.context.run_id), mine=mine)

    @dg.op(name=f"{stage.name}_merge", ins={**source_in, "counts": dg.In(list[int])},
           required_resource_keys=resources)
    def merge(context: dg.OpExecutionContext, counts: list[int], **source: StageScan) -> ChunkedFrame:
        step = StageStep.of(context, writer=True)
        with step_errors():
            spool = _spool(stage, step, source.get("source"), prune=True)
            # Under the run's writer lock: a part can be missing only if another run of this run_id
            # published the stage (and cleared its spool) after our shards ran; make it again.
            count = counts[0] if len(set(counts)) == 1 else None  # the shards agree: no need to read the input again
            if count is None or not all(spool.done(i) for i in range(count)):
                with _opened_on_first_use(lambda: stage.work(
                        dataclasses.replace(step, spool=spool, source=source.get("source")))) as work:
                    chunks = stage.chunks(step, source.get("source"), lambda i: not spool.done(i))
                    made = run_chunks(spool, chunks, timed(work, "merge", context.run_id))
                if set(counts) != {made}:
                    raise dg.Failure(f"{stage.name}: the shards counted {sorted(set(counts))} chunks, the merge {made}")
                count = made
            return stage.finish(step, spool, count)

    def compose(**inputs: Any) -> Any:
        source = {"source": inputs[upstream]} if upstream else {}
        counts = plan(**source).map(lambda index: shard(index=index, **source))
        return merge(counts=counts.collect(), **source)

    compose.__name__ = stage.name
    compose.__signature__ = _signature(upstream)  # type: ignore[attr-defined]  # what Dagster reads for the inputs
    return dg.graph_asset(name=stage.name, description=description, partitions_def=partitions_def,
                          group_name="distill", tags=tags, kinds=kinds)(compose)


def _signature(upstream: str | None) -> Any:
    import inspect

    return inspect.Signature([inspect.Parameter(upstream, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
                             if upstream else [])


@contextlib.contextmanager
def _opened_on_first_use(open_work: Callable[[], AbstractContextManager[ChunkWork]]) -> Iterator[ChunkWork]:
    """Work that opens what it needs (a teacher session, a model) only when a chunk needs it."""
    with contextlib.ExitStack() as stack:
        opened: list[ChunkWork] = []

        def work(index: int, chunk: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
            if not opened:
                opened.append(stack.enter_context(open_work()))
            return opened[0](index, chunk)
        yield work
