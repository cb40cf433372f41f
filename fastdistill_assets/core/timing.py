"""Timings: wall clock and per-row latency percentiles for asset metadata."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


def percentiles(values_ms: Iterable[float]) -> dict[str, float]:
    """p50/p90/p95 of per-row latencies in milliseconds (empty input gives an empty dict)."""
    arr = np.asarray([v for v in values_ms if v is not None], dtype=float)
    if arr.size == 0:
        return {}
    p50, p90, p95 = np.percentile(arr, [50, 90, 95])
    return {"p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p95_ms": round(float(p95), 3)}


@dataclass
class StageTimer:
    """Measures a stage's wall time; ``metadata()`` gives the timing fields for Dagster."""

    started: float = field(default_factory=time.perf_counter)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started

    def metadata(self, row_latencies_ms: Iterable[float] | None = None, rows: int | None = None) -> dict[str, float]:
        wall = self.elapsed_s()
        out: dict[str, float] = {"timing_wall_s": round(wall, 4)}
        if rows is not None and wall > 0:
            out["timing_rows_per_s"] = round(rows / wall, 2)
        if row_latencies_ms is not None:
            out.update({f"timing_row_{k}": v for k, v in percentiles(row_latencies_ms).items()})
        return out
