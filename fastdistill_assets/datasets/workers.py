"""A process pool for loading, started on first use and sized from ``scale.workers``."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

PARALLEL_MIN_ROWS = 2_000  # a smaller batch is loaded in-process (starting workers costs more)


class LoadPool:
    """``workers`` processes (None: ``os.cpu_count()``), started when a large batch first needs
    them; 1 worker never starts a pool. Close it (or use it as a context manager) when done."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None

    def executor(self, rows: int) -> ProcessPoolExecutor | None:
        """The pool for a batch of ``rows`` questions, or None where the batch is loaded in-process."""
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

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
