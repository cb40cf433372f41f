"""The timing report: every stage's recorded timings and the pipeline's real wall clock, read
back from the Dagster instance.

Stage ``wall_s`` values are measured inside each asset's body. The wall clock of the pipeline
is not their sum: it is taken from the Dagster event log, from the start of the step that
produced a stage's latest materialization to the end of the step that produced the last one,
so step start-up, input/output handling, checks and Dagster's own work between steps count.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

STAGES = ("raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model", "baseline_model")
DATA_STAGES = ("raw", "canonical", "teacher_candidates", "filtered", "distilled")
EVAL_STAGE = "eval_report"
WALL_CLOCK_SPANS = {  # what each wall clock figure spans, said in the report
    "data_wall_s": "raw step start -> distilled step end",
    "pipeline_wall_s": "raw step start -> this timing report inside eval_report",
    "rule": "from the Dagster step events, per Dagster run from its first step start to its last step end; "
            "time between runs is not counted",
}


@dataclass(frozen=True)
class StepSpan:
    """When the step that produced a stage's latest materialization ran (epoch seconds)."""

    dagster_run_id: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def wall_clock_s(spans: Iterable[StepSpan]) -> float | None:
    """The real wall clock the spans cover, or None without spans.

    Within one Dagster run it is the time from the run's first step start to its last step end
    (gaps between the steps are the run's own overhead and count). The stages may come from
    several Dagster runs: each run's interval counts once, overlapping runs are merged, and the
    idle time between runs is not counted.
    """
    per_run: dict[str, tuple[float, float]] = {}
    for span in spans:
        low, high = per_run.get(span.dagster_run_id, (span.start, span.end))
        per_run[span.dagster_run_id] = (min(low, span.start), max(high, span.end))
    total, current = 0.0, None
    for low, high in sorted(per_run.values()):
        if current is not None and low <= current[1]:
            current = (current[0], max(current[1], high))
            continue
        if current is not None:
            total += current[1] - current[0]
        current = (low, high)
    return None if current is None else total + current[1] - current[0]


def per_hour(count: int | None, seconds: float | None) -> float | None:
    """``count`` per hour of ``seconds`` (one decimal); None when either is unknown or seconds is 0."""
    if count is None or not seconds:
        return None
    return round(count / seconds * 3600, 1)


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def timing_report(meta: Mapping[str, Mapping[str, Any]], spans: Mapping[str, StepSpan],
                  eval_wall_s: float) -> dict[str, Any]:
    """Per-stage timings, the real wall clock, the pipeline's kept rate and the throughput figures.

    ``meta``: each stage's latest materialization metadata (plain values); ``spans``: each
    stage's step span (``eval_report``'s up to now); ``eval_wall_s``: eval_report's body so far.
    A figure that cannot be measured is None: ``teacher_tokens_per_sec`` covers fresh teacher
    calls only and is missing when every answer came from the cache; ``teacher_cached_share`` is
    the share of answers (0..1) that came from the cache; ``teacher_tokens_per_sec_cold``, missing
    when nothing was cached, is the throughput of the run that produced the cached answers.
    """
    stages: dict[str, dict[str, Any]] = {}
    for stage in (*STAGES, EVAL_STAGE):
        values = {k.removeprefix("timing_"): v for k, v in meta.get(stage, {}).items() if k.startswith("timing_")}
        if stage == EVAL_STAGE:
            values = {"wall_s": round(eval_wall_s, 4)}
        if stage in spans:
            values["step_s"] = round(spans[stage].seconds, 3)
        if values:
            stages[stage] = values
    data_spans = [spans[s] for s in DATA_STAGES if s in spans]
    data_wall = wall_clock_s(data_spans)
    teacher, student = meta.get("teacher_candidates", {}), meta.get("student_model", {})
    return {
        "stages": stages,
        "data_wall_s": _rounded(data_wall),
        "pipeline_wall_s": _rounded(wall_clock_s(spans.values())),
        "wall_clock_spans": WALL_CLOCK_SPANS,
        "data_dagster_runs": len({s.dagster_run_id for s in data_spans}),
        "pipeline_kept_samples_per_hour": per_hour(meta.get("distilled", {}).get("kept"), data_wall),
        "teacher_tokens_per_sec": teacher.get("teacher_tokens_per_sec"),
        "teacher_cached_share": teacher.get("teacher_cached_share"),
        "teacher_tokens_per_sec_cold": teacher.get("teacher_tokens_per_sec_cold"),
        "train_tokens_per_sec": student.get("train_tokens_per_sec"),
    }


# -- reading the Dagster instance -------------------------------------------------------------

def latest_materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.EventLogRecord]:
    """The latest materialization record of each stage for this run_id (partition)."""
    out: dict[str, dg.EventLogRecord] = {}
    for stage in STAGES:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage), asset_partitions=[run_id]), limit=1).records
        if records and records[0].asset_materialization:
            out[stage] = records[0]
    return out


def metadata_by_stage(records: Mapping[str, dg.EventLogRecord]) -> dict[str, dict[str, Any]]:
    """Each stage's materialization metadata as plain values."""
    return {stage: {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
            for stage, record in records.items()}


def step_spans(instance: dg.DagsterInstance, records: Mapping[str, dg.EventLogRecord]) -> dict[str, StepSpan]:
    """For each stage, the span of the step that wrote its latest materialization: the step's
    STEP_START to its end (STEP_SUCCESS, or failure after it materialized; the materialization's
    own time when the step has not ended), from the Dagster run that wrote it. A sharded stage's
    span runs from its first step (plan) to its last (merge)."""
    by_run: dict[str, dict[str, dg.EventLogRecord]] = {}
    for stage, record in records.items():
        by_run.setdefault(record.run_id, {})[stage] = record
    spans: dict[str, StepSpan] = {}
    for dagster_run_id, stage_records in by_run.items():
        steps: dict[str, list[Any]] = {}  # stage -> its steps (a sharded stage's are `<stage>.<op>[shard]`)
        for stat in instance.get_run_step_stats(dagster_run_id):
            steps.setdefault(stat.step_key.split(".")[0], []).append(stat)
        for stage, record in stage_records.items():
            own = steps.get((record.event_log_entry.step_key or "").split(".")[0], [])
            starts = [s.start_time for s in own if s.start_time is not None]
            ends = [s.end_time for s in own if s.end_time is not None]
            spans[stage] = StepSpan(dagster_run_id, min(starts, default=record.timestamp),
                                    max(ends, default=record.timestamp))
    return spans


def running_step_span(instance: dg.DagsterInstance, dagster_run_id: str, step_key: str,
                      now: float | None = None) -> StepSpan:
    """The span of a step that is still running: its STEP_START to ``now`` (default: the clock)."""
    now = time.time() if now is None else now
    stats = next(iter(instance.get_run_step_stats(dagster_run_id, step_keys=[step_key])), None)
    start = stats.start_time if stats is not None and stats.start_time is not None else now
    return StepSpan(dagster_run_id, start, now)
