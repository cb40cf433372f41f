"""Materialize a run (the ``distill`` job, in-process) in the project's Dagster instance and say
what happened: one line per asset as it is materialized, the checks, then a summary.

Dagster's own event log (DEBUG and up) is stored in the instance as always; on the console only
these lines and Dagster's warnings and errors appear, or everything with ``verbose``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from fastdistill_assets.config.loading import ConfigError
from fastdistill_assets.config.settings import artifacts_dir
from fastdistill_assets.defs.partitions import RUN_ID
from fastdistill_assets.gates.label_cost import cost_line
from fastdistill_assets.store.storage import ArtifactStore, StageOutput
from fastdistill_assets.teacher.progress import LINE, PREFIX

EVAL_REPORT = "eval_report"


def _report_summary(run_id: str) -> Path | None:
    """The eval_report.md of the current eval_report version of ``run_id``, or None if there is none."""
    try:
        report = ArtifactStore(artifacts_dir()).read(run_id, EVAL_REPORT)
    except FileNotFoundError:
        return None
    return report.files.get("eval_report.md") if isinstance(report, StageOutput) else None


SHOWN_EXAMPLES = 3   # kept labels and rejected answers printed after a run that made filtered


def label_lines(run_id: str, shown: int = SHOWN_EXAMPLES, with_cost: bool = True) -> list[str]:
    """A few of filtered's example labels (``quality_report.json``): a kept one per label source,
    then rejected ones for ``shown`` reasons; ``with_cost``: and what the kept labels cost."""
    try:
        output = ArtifactStore(artifacts_dir()).read(run_id, "filtered")
    except FileNotFoundError:
        return []
    if not isinstance(output, StageOutput) or "quality_report.json" not in output.files:
        return []
    report = json.loads(output.files["quality_report.json"].read_text())
    examples = report.get("examples", [])
    cost = cost_line(report.get("label_cost") or {})
    kept = list({e["label_source"]: e for e in reversed(examples) if e["verdict"] == "kept"}.values())[::-1]
    rejected = list({e["verdict"]: e for e in reversed(examples) if e["verdict"] != "kept"}.values())[::-1][:shown]
    return ["labels (a few; all in filtered, and in the UI's label_examples):"] + [
        f"  {'kept (' + str(e['label_source']) + ')' if e['verdict'] == 'kept' else 'rejected: ' + e['verdict']}: "
        f"{e['question']} -> {e['sql']} -> {e['result_preview'] or '-'}" for e in kept + rejected] + \
        ([cost] if cost and with_cost else [])


def _value(metadata: Mapping, key: str):
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def describe_check(evaluation) -> str:
    """``asset.check: passed`` or ``asset.check FAILED (blocking): value V, must be OP THRESHOLD — description``."""
    name = f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}"
    if evaluation.passed:
        return f"check {name}: passed"
    metadata = evaluation.metadata or {}
    blocking = evaluation.blocking if evaluation.blocking is not None else \
        evaluation.severity == dg.AssetCheckSeverity.ERROR
    parts = [f"check {name} FAILED ({'blocking' if blocking else 'warning'})"]
    value, op, threshold = _value(metadata, "value"), _value(metadata, "op"), _value(metadata, "threshold")
    if op is not None and threshold is not None:
        parts.append(f": value {'none' if value is None else f'{value:.4g}'}, must be {op} {threshold:g}")
    elif "count" in metadata:
        parts.append(f": count {_value(metadata, 'count')}")
    if evaluation.description:
        parts.append(f" — {evaluation.description}")
    return "".join(parts)


class Progress:
    """Turns the run's Dagster events into progress lines (printed as they come) and a summary."""

    def __init__(self, out=None) -> None:
        self.out = out or sys.stdout
        self.stage_started: dict[str, float] = {}   # a stage's first step (a sharded one has several)
        self.bar_open = False                       # a teacher progress bar is drawn on the last line
        self.materialized: list[str] = []
        self.checks: list = []
        self.failed_steps: list[tuple[str, str]] = []
        self.not_run: list[str] = []
        self.notes: list[str] = []   # what a stage says the user must know (the teacher's budget reached)

    def _print(self, line: str) -> None:
        if self.bar_open:
            print(file=self.out)
            self.bar_open = False
        print(line, file=self.out, flush=True)

    def teacher(self, line: str) -> None:
        """A teacher progress line: redrawn in place as a bar on a terminal, else printed."""
        found = LINE.match(line)
        if found is None or not self.out.isatty():
            self._print(line)
            return
        done, total = (int(found[k].replace(",", "")) for k in ("done", "total"))
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        print(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {line}\x1b[K", end="", file=self.out, flush=True)
        self.bar_open = True

    def handle(self, event: dg.DagsterEvent, created: float) -> None:
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            self.stage_started.setdefault(_stage_of(event.step_key), created)
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            key = mat.asset_key.to_user_string()
            count = mat.metadata.get("count")
            started = self.stage_started.get(_stage_of(event.step_key), created)
            self.materialized.append(key)
            self._print(f"materialized {key:<20} rows={count.value if count else '-':<8} {created - started:7.1f}s")
            note = mat.metadata.get("budget_note")
            if note is not None:
                self.notes.append(str(note.value))
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            self.checks.append(evaluation)
            if not evaluation.passed:
                self._print(describe_check(evaluation))
        elif kind == dg.DagsterEventType.STEP_FAILURE and not _is_check_failure(event):  # said by its check
            error = event.event_specific_data.error
            message = (error.message.strip().splitlines() or [""])[-1] if error else ""
            self.failed_steps.append((event.step_key, message))

    def summary(self) -> list[str]:
        passed = sum(1 for c in self.checks if c.passed)
        failed = len(self.checks) - passed
        lines = [*self.notes, f"checks: {passed} passed, {failed} failed" + (" (each said above)" if failed else "")]
        lines += [f"step {step} failed: {message}" for step, message in self.failed_steps]
        if self.not_run:
            lines.append(f"not run (an upstream step or blocking check failed): {', '.join(self.not_run)}")
        return lines


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: Progress) -> None:
        super().__init__(level=logging.DEBUG)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_event", None)
        try:
            if event is not None:
                self.progress.handle(event, record.created)
            elif _is_not_executing(record):
                self.progress.not_run.append(record.dagster_meta["step_key"])
            elif str((getattr(record, "dagster_meta", None) or {}).get("orig_message", "")).startswith(PREFIX):
                self.progress.teacher(record.dagster_meta["orig_message"])
        except Exception:  # a progress line must never fail the run
            self.handleError(record)


CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
BAR_WIDTH = 30


def _stage_of(step_key: str) -> str:
    """The asset a step makes: a sharded stage's steps are ``<stage>.<stage>_plan|shard[..]|merge``."""
    return step_key.split(".", 1)[0]


def _is_not_executing(record: logging.LogRecord) -> bool:
    meta = getattr(record, "dagster_meta", None) or {}
    return bool(meta.get("step_key")) and str(meta.get("orig_message", "")).endswith("Not executing.")


def _said_by_the_summary(record: logging.LogRecord) -> bool:
    """Dagster's errors that the progress lines and summary already say in one line each: a
    blocking check's step failure (its stack trace is Dagster's), the run failure, and each step
    left out after it. Any other warning or error (an asset's exception) stays on the console."""
    event = getattr(record, "dagster_event", None)
    if event is None:
        return _is_not_executing(record)
    if event.event_type == dg.DagsterEventType.RUN_FAILURE:
        return True
    return event.event_type == dg.DagsterEventType.STEP_FAILURE and _is_check_failure(event)


def _is_check_failure(event: dg.DagsterEvent) -> bool:
    error = event.event_specific_data.error
    return error is not None and error.cls_name == CHECK_FAILED_ERROR


@dg.logger(dg.colored_console_logger.config_schema,
           description="Dagster's colored console logger, less what the fastdistill summary says itself")
def quiet_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    log = dg.colored_console_logger.logger_fn(init_context)
    log.addFilter(lambda record: not _said_by_the_summary(record))
    return log


def _progress_logger(progress: Progress) -> dg.LoggerDefinition:
    @dg.logger(description="fastdistill progress lines")
    def progress_logger(_: dg.InitLoggerContext) -> logging.Logger:
        log = logging.Logger("fastdistill.progress", level=logging.DEBUG)
        log.addHandler(_ProgressHandler(progress))
        return log

    return progress_logger


def parse_selection(select: str | None, known: Sequence[dg.AssetKey]) -> list[dg.AssetKey] | None:
    """``raw,canonical`` → their asset keys; None (everything) for no selection or ``*``."""
    if select is None or select.strip() == "*":
        return None
    names = [name.strip() for name in select.split(",") if name.strip()]
    keys = [dg.AssetKey.from_user_string(name) for name in names]
    if unknown := [name for name, key in zip(names, keys, strict=True) if key not in set(known)]:
        raise ConfigError(f"--select: unknown asset {', '.join(unknown)} (assets: "
                          f"{', '.join(sorted(k.to_user_string() for k in known))})")
    if not keys:
        raise ConfigError("--select: no asset named")
    return keys


def materialize_run(run_id: str, select: str | None = None, verbose: bool = False) -> int:
    """Run the ``distill`` job (or its ``select``ed assets and their checks) for ``run_id`` in the
    project's instance; print progress and a summary. Returns 0 on success, 1 when a step or a
    blocking check failed.

    Raises:
        ConfigError: the run_id is not registered, or ``select`` names an unknown asset.
    """
    from fastdistill_assets.definitions import defs
    from fastdistill_assets.defs.jobs import JOB_NAME
    from fastdistill_assets.runtime.instance import open_instance

    job = defs.resolve_job_def(JOB_NAME)
    selection = parse_selection(select, sorted(job.asset_layer.executable_asset_keys))
    progress = Progress()
    console = dg.colored_console_logger if verbose else quiet_console_logger
    logger_defs = {"console": console, "progress": _progress_logger(progress)}
    run_config = {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}},
                              "progress": {}}}
    started = time.monotonic()
    with open_instance() as instance:
        if not instance.has_dynamic_partition(RUN_ID, run_id):
            raise ConfigError(f"run {run_id!r} does not exist: create it with `fastdistill run new {run_id}` "
                              "(`fastdistill run list` lists the runs)")
        result = job.with_logger_defs(logger_defs).execute_in_process(
            run_config=run_config, partition_key=run_id, instance=instance, raise_on_error=False,
            asset_selection=selection)
    for line in progress.summary():
        print(line)
    if "filtered" in progress.materialized:  # the cost line is the eval report's when it is printed below
        print("\n".join(label_lines(run_id, with_cost=EVAL_REPORT not in progress.materialized)))
    summary = _report_summary(run_id) if EVAL_REPORT in progress.materialized else None
    if summary:
        print()
        print(summary.read_text())
        print(f"\nreport: {summary}  (plots beside it; `make dev` for the Dagster UI)")
    elapsed = time.monotonic() - started
    print(f"run {run_id}: {'succeeded' if result.success else 'FAILED'} in {elapsed:.1f}s "
          f"(Dagster run {result.run_id}; its full event log is in the instance, `--verbose` prints it)")
    return 0 if result.success else 1
