"""Resources for run configuration and artifact locations."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from fastdistill_assets.config import settings
from fastdistill_assets.config.loading import ConfigError
from fastdistill_assets.config.models import FrozenRun
from fastdistill_assets.config.registry import RunConfigError, RunRegistry
from fastdistill_assets.core.diskspace import as_disk_full
from fastdistill_assets.runtime.launcher import end_dead_runs
from fastdistill_assets.runtime.locks import RunWriterLock, describe_holder
from fastdistill_assets.runtime.run_worker import (
    instance_postgres_url,
    stop_step_with_run_worker,
)
from fastdistill_assets.store.layout import datasets_dir, work_dir
from fastdistill_assets.teacher.stopped import TeacherStopped

OWN_STEP_POLL_S = 0.2  # how often a step tries the lock another step of its own run holds


class RunConfigResource(dg.ConfigurableResource):
    """Gives each asset its run's frozen configuration (and refuses changed gates).

    Every asset step asks for it first, so this is also where a step becomes its run's one
    writer (:mod:`fastdistill_assets.runtime.locks`) and is tied to its run worker's life
    (:mod:`fastdistill_assets.runtime.run_worker`).
    """

    artifacts_dir: str = Field(default_factory=lambda: str(settings.artifacts_dir()))
    configs_dir: str = Field(default_factory=lambda: str(settings.configs_dir()))
    writer_wait_s: float = Field(default=6 * 3600.0, gt=0, description=(
        "how long a step waits for another materialization of the same run_id before it fails"))
    writer_retry_s: float = Field(default=5.0, gt=0, description=(
        "while it waits, the step is retried this often (between tries it holds no pool slot)"))
    progress_every_s: float = Field(default=10.0, gt=0, description=(
        "the teacher logs its progress (done/total, answers/s, errors, ETA) at least this often"))
    _lock: RunWriterLock | None = PrivateAttr(default=None)

    def registry(self) -> RunRegistry:
        return RunRegistry(Path(self.artifacts_dir), Path(self.configs_dir))

    def enter_step(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext | dg.OpExecutionContext,
                   writer: bool | None = None) -> FrozenRun:
        """What every step of a run does first, before any work; returns the run's frozen config.

        In order: a step in a process of its own exits if its run worker dies; runs whose worker
        died are ended (marked failed, pool slots freed); a partition added from the UI, which has
        no frozen config yet, is checked (preflight) and the current configs are frozen for it; a
        run whose gate config changed since it was created is refused; an asset step (or, with
        ``writer=True``, the op that publishes a sharded stage) takes the run's writer lock,
        waiting for another materialization of the same run_id. To read a run's config without
        any of this: ``registry().load(run_id)``, a plain read.
        """
        from fastdistill_assets.runtime.preflight import preflight

        run_id = context.partition_key
        stop_step_with_run_worker(context.instance, context.run.run_id, context.log)
        for ended in end_dead_runs(context.instance):
            context.log.warning(f"Dagster run {ended} had lost its worker process: marked failed, pool slots freed")
        registry = self.registry()
        with step_errors():
            if not registry.exists(run_id):  # made in the UI: check it as `fastdistill run new` would
                frozen = registry.prepare(run_id, environ=dict(os.environ))
                for note in preflight(frozen, Path(self.configs_dir), self.data_dir(), dict(os.environ)):
                    context.log.warning(note)
                if registry.save_new(frozen):
                    context.log.info(f"run {run_id!r} had no frozen config; froze the current configs for it")
            frozen = registry.load(run_id)
            registry.assert_gates_unchanged(frozen)
        if writer if writer is not None else isinstance(context, dg.AssetExecutionContext):
            self._hold_writer_lock(context, run_id)
        return frozen

    def _hold_writer_lock(self, context: dg.AssetExecutionContext | dg.OpExecutionContext, run_id: str) -> None:
        if self._lock is not None and self._lock.run_id == run_id:
            return  # in-process executor: held since this run's first step
        self._release()
        lock = RunWriterLock(Path(self.artifacts_dir), run_id, instance_postgres_url(context.instance))
        self._acquire_or_retry(context, lock, f"run {run_id!r}")
        self._lock = lock

    def _acquire_or_retry(self, context: dg.AssetExecutionContext | dg.OpExecutionContext, lock: RunWriterLock,
                          what: str) -> None:
        """Take ``lock`` or ask Dagster to retry the step in ``writer_retry_s`` (failing after
        ``writer_wait_s``). It waits by retrying rather than blocking: a blocked step would keep
        its `teacher` pool slot, which the lock's holder may need to finish."""
        with step_errors():   # a full disk: one line
            if lock.acquire({"dagster_run_id": context.run.run_id}):
                return
            if lock.holder().get("dagster_run_id") == context.run.run_id and self._wait_for_own_step(context, lock, what):
                return
        tries = math.ceil(self.writer_wait_s / self.writer_retry_s)
        busy = f"{what} is being materialized elsewhere ({describe_holder(lock.holder())})"
        if context.retry_number >= tries:
            raise dg.Failure(description=f"{busy}; waited {self.writer_wait_s:g}s (writer_wait_s): let it "
                             "finish or cancel it, then materialize again", metadata={"run_id": context.partition_key})
        context.log.warning(f"{busy}; trying again in {self.writer_retry_s:g}s")
        raise dg.RetryRequested(max_retries=tries, seconds_to_wait=self.writer_retry_s)

    def _wait_for_own_step(self, context: dg.AssetExecutionContext | dg.OpExecutionContext, lock: RunWriterLock,
                           what: str) -> bool:
        """Another step of this same Dagster run holds ``lock`` (steps in processes of their own):
        wait for it here, as steps of one run wait for each other, not as for a run elsewhere. The
        holder already has whatever pool slot it needs, so holding ours meanwhile cannot block it.
        Returns False if it is still held after ``writer_wait_s``."""
        context.log.info(f"{what}: waiting for another step of this Dagster run to finish writing "
                         f"({describe_holder(lock.holder())})")
        deadline = time.monotonic() + self.writer_wait_s
        while time.monotonic() < deadline:
            time.sleep(OWN_STEP_POLL_S)
            if lock.acquire({"dagster_run_id": context.run.run_id}):
                return True
        return False

    @contextlib.contextmanager
    def shard_lock(self, context: dg.OpExecutionContext, shard: str) -> Iterator[None]:
        """One writer per shard of a run's stage (``<run_id>.<shard>`` under the locks folder):
        the shards of one Dagster run work side by side, while another run of the same run_id
        waits for each shard as it would for the whole run."""
        lock = RunWriterLock(Path(self.artifacts_dir), f"{context.partition_key}.{shard}",
                             instance_postgres_url(context.instance))
        self._acquire_or_retry(context, lock, f"{shard} of run {context.partition_key!r}")
        try:
            yield
        finally:
            lock.release()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def work_dir(self, context: dg.AssetExecutionContext, name: str) -> Path:
        """A working folder of this run that outlives a step (e.g. training checkpoints, so a
        killed training resumes): ``<artifacts>/<run_id>/_work/<name>``. Not a stage artifact."""
        folder = work_dir(Path(self.artifacts_dir), context.partition_key, name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def data_dir(self) -> Path:
        """Where generated datasets (the demo) are kept, shared by all runs."""
        return datasets_dir(Path(self.artifacts_dir))


@contextlib.contextmanager
def step_errors(*also: type[Exception]) -> Iterator[None]:
    """A user's mistake found inside a step ends it as ``dg.Failure`` with the one-line message
    (and the message as metadata), not as a stack trace. ``also``: more exception types that
    mean a user's mistake at this call (a dataset file moved or broken). A full disk is said
    the same way, naming the folder (see :mod:`diskspace`)."""
    try:
        yield
    except Exception as err:
        full = as_disk_full(err, fallback=settings.artifacts_dir())
        if full is not None:
            raise dg.Failure(description=str(full), metadata=full.metadata()) from None
        if isinstance(err, (ConfigError, RunConfigError, TeacherStopped, *also)):
            raise dg.Failure(description=str(err), metadata={"error": str(err)}) from None
        raise
