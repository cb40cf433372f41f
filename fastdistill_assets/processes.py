"""Worker processes for the CPU-bound stages (loading, gates): the CPUs a step may use, and a
process pool started on first use."""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PARALLEL_MIN_ROWS = 2_000  # a smaller batch runs in-process (starting workers costs more than they save)
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit() -> int | None:
    """The CPUs this process's cgroup v2 quota allows (``docker --cpus``, a Kubernetes CPU limit),
    rounded up; None where there is no quota or no cgroup v2."""
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def available_cpus() -> int:
    """The CPUs this process may run on: its CPU affinity, capped by its cgroup's CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus


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
