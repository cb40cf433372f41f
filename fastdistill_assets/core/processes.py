"""Worker processes for the CPU-bound stages (loading, gates): the CPUs a step may use, and a
process pool started on first use."""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PARALLEL_MIN_ROWS = 2_000  # a smaller batch runs in-process (starting workers costs more than they save)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _quota(cpu_max: Path) -> int | None:
    """The CPUs one cgroup v2 ``cpu.max`` allows, rounded up; None for no quota or no file."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_limit() -> int | None:
    """The CPUs this process's cgroup v2 quota allows (``docker --cpus``, a Kubernetes CPU limit,
    a systemd ``CPUQuota``), rounded up: the smallest quota on the way from its own cgroup (named
    in /proc/self/cgroup) up to the root. None where there is none or no cgroup v2."""
    try:
        own = next(line.split("::", 1)[1] for line in PROC_CGROUP.read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        own = "/"
    folder = CGROUP_ROOT / own.strip().lstrip("/")
    limits = []
    while True:
        if (limit := _quota(folder / "cpu.max")) is not None:
            limits.append(limit)
        if folder == CGROUP_ROOT or CGROUP_ROOT not in folder.parents:
            break
        folder = folder.parent
    return min(limits, default=None)


def available_cpus() -> int:
    """The CPUs this process may run on: its CPU affinity, capped by its cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus


def step_workers(configured: int | None, shards: int) -> int:
    """Worker processes for one shard step: ``scale.workers``, or by default the CPUs this process
    may use shared among the ``shards`` steps that may run side by side."""
    return configured or max(1, available_cpus() // shards)


class WorkerPool:
    """``workers`` processes (None: :func:`available_cpus`), started when a batch of at least
    PARALLEL_MIN_ROWS rows first needs them; one worker never starts a pool. A worker keeps what
    it opens (database connections) until the pool is closed, so keep one pool for a stage and
    close it (or use it as a context manager) when the stage is done."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or available_cpus()
        self._executor: ProcessPoolExecutor | None = None

    def executor(self, rows: int) -> ProcessPoolExecutor | None:
        """The pool for a batch of ``rows`` rows, or None where the batch runs in-process."""
        if self.workers <= 1 or rows < PARALLEL_MIN_ROWS:
            return None
        if self._executor is None:
            # forkserver: a worker must not inherit the step's open files (its run's writer lock) or threads
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
