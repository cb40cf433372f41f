"""Sharded stages: a row-wise stage as a Dagster graph of steps over disjoint sets of its chunks.

A stage's input is cut into chunks (``chunks.rechunk``: ``rows`` rows, whole samples when a
``key`` is given). ``<stage>_plan`` fans out one dynamic ``<stage>_shard`` step per shard
(``scale.shards`` of the run's frozen config); shard ``k`` of ``K`` produces the chunks whose
index is ``k`` mod ``K`` into the stage's :class:`~fastdistill_assets.chunks.ChunkSpool`, under
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
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.chunks import ChunkedFrame, ChunkSpool, ChunkWork, rechunk, run_chunks, spool_fingerprint
from fastdistill_assets.config import FrozenRun
from fastdistill_assets.resources import RunConfigResource, step_errors
from fastdistill_assets.storage import StageScan
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.timing import percentiles

STEP_IO = "step_io"


@dataclass(frozen=True)
class ShardedStage:
    """What makes a stage: how its input is chunked, what its parts depend on, the work per chunk
    and how the parts become the stage (metadata included)."""

    name: str
    rows: Callable[[FrozenRun], int]
    key: str | None
    depends_on: Callable[[FrozenRun, StageScan], dict[str, Any]]
    work: Callable[[dg.OpExecutionContext, FrozenRun, ProviderGateway], AbstractContextManager[ChunkWork]]
    finish: Callable[[dg.OpExecutionContext, FrozenRun, ProviderGateway, ChunkSpool, int], ChunkedFrame]


def _spool(stage: ShardedStage, context: dg.OpExecutionContext, run_config: RunConfigResource,
           frozen: FrozenRun, upstream: StageScan, prune: bool = False) -> ChunkSpool:
    return ChunkSpool(run_config.work_dir(context, stage.name), spool_fingerprint(**stage.depends_on(frozen, upstream)),
                      prune=prune)


def timed(work: ChunkWork, by: str) -> ChunkWork:
    """``work`` with its part's start and end times (epoch seconds) and its maker in the summary."""
    def run(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
        started = time.time()
        frame, summary = work(index, chunk)
        return frame, {**summary, "started": started, "ended": time.time(), "by": by}
    return run


def stage_span_s(spool: ChunkSpool, count: int) -> float:
    """From the first part's start to the last part's end, over all attempts and shards (a
    resumed stage counts the pause between its attempts)."""
    summaries = [spool.summary(i) for i in range(count)]
    if not summaries:
        return 0.0
    return max(s["ended"] for s in summaries) - min(s["started"] for s in summaries)


def stage_metadata(spool: ChunkSpool, count: int, rows: int, row_latencies_ms: Iterable[float],
                   frozen: FrozenRun) -> dict[str, Any]:
    """The timing metadata of a sharded stage: its span (``timing_wall_s``), rows/s over it, row
    latency percentiles, chunks, shards, and how many parts the merge had to make itself."""
    wall = stage_span_s(spool, count)
    return {
        "timing_wall_s": round(wall, 4), **({"timing_rows_per_s": round(rows / wall, 2)} if wall else {}),
        **{f"timing_row_{k}": v for k, v in percentiles(row_latencies_ms).items()},
        "chunks": count, "shards": frozen.config.scale.shards,
        "parts_made_by_merge": sum(spool.summary(i).get("by") == "merge" for i in range(count)),
    }


def sharded_asset(stage: ShardedStage, upstream: str, *, description: str, pool: str | None,
                  tags: dict[str, str], kinds: set[str], partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The stage as a graph-backed asset: plan → shard (dynamic, one step per shard) → merge."""

    @dg.op(name=f"{stage.name}_plan", out=dg.DynamicOut(int, io_manager_key=STEP_IO))
    def plan(context: dg.OpExecutionContext, run_config: RunConfigResource,
             source: StageScan) -> Iterator[dg.DynamicOutput[int]]:
        shards = run_config.for_partition(context).config.scale.shards  # (``source``: runs after its stage)
        for shard in range(shards):
            yield dg.DynamicOutput(shard, mapping_key=f"shard_{shard}")

    @dg.op(name=f"{stage.name}_shard", pool=pool, out=dg.Out(int, io_manager_key=STEP_IO))
    def shard(context: dg.OpExecutionContext, run_config: RunConfigResource, teacher: ProviderGateway,
              source: StageScan, index: int) -> int:
        frozen = run_config.for_partition(context)
        shards = frozen.config.scale.shards
        chunks = rechunk(source.row_groups(), stage.rows(frozen), stage.key)
        with run_config.shard_lock(context, f"{stage.name}.shard-{index}-of-{shards}"), step_errors(), \
                stage.work(context, frozen, teacher) as work:
            spool = _spool(stage, context, run_config, frozen, source)
            return run_chunks(spool, chunks, timed(work, f"shard-{index}"), mine=lambda chunk: chunk % shards == index)

    @dg.op(name=f"{stage.name}_merge")
    def merge(context: dg.OpExecutionContext, run_config: RunConfigResource, teacher: ProviderGateway,
              source: StageScan, counts: list[int]) -> ChunkedFrame:
        frozen = run_config.for_partition(context, writer=True)
        spool = _spool(stage, context, run_config, frozen, source, prune=True)
        # Under the run's writer lock: a part can be missing only if another run of this run_id
        # published the stage (and cleared its spool) after our shards ran; make it again.
        with step_errors(), _opened_on_first_use(lambda: stage.work(context, frozen, teacher)) as work:
            count = run_chunks(spool, rechunk(source.row_groups(), stage.rows(frozen), stage.key), timed(work, "merge"))
        if set(counts) != {count}:
            raise dg.Failure(f"{stage.name}: the shards counted {sorted(set(counts))} chunks, the merge {count}")
        return stage.finish(context, frozen, teacher, spool, count)

    def compose(**inputs: Any) -> Any:
        source = inputs[upstream]
        counts = plan(source).map(lambda index: shard(source, index))
        return merge(source, counts.collect())

    compose.__name__ = stage.name
    compose.__signature__ = _signature(upstream)  # type: ignore[attr-defined]
    return dg.graph_asset(name=stage.name, description=description, partitions_def=partitions_def,
                          group_name="distill", tags=tags, kinds=kinds)(compose)


def _signature(upstream: str) -> Any:
    import inspect

    return inspect.Signature([inspect.Parameter(upstream, inspect.Parameter.POSITIONAL_OR_KEYWORD)])


@contextlib.contextmanager
def _opened_on_first_use(open_work: Callable[[], AbstractContextManager[ChunkWork]]) -> Iterator[ChunkWork]:
    """Work that opens what it needs (a teacher session, a model) only when a chunk needs it."""
    with contextlib.ExitStack() as stack:
        opened: list[ChunkWork] = []

        def work(index: int, chunk: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
            if not opened:
                opened.append(stack.enter_context(open_work()))
            return opened[0](index, chunk)
        yield work
