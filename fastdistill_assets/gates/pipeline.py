"""Run every gate on every candidate, short-circuiting, and record each verdict and reason.

Order: teacher error -> (rationale split) -> clean -> rules -> parse -> execute -> (empty result) ->
grounding (``ungrounded``, ``missing_numbers`` are recorded for every executed candidate; they
reject only gold-free ones) -> gold match, for samples with gold. A sample without gold stops after grounding
here: the self-consistency gate (``consistency``), the judge and the final selection (``select``)
run afterwards over the whole frame, since they compare a sample's candidates.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import polars as pl

from fastdistill_assets.config.models import ExecutionGates, GatesConfig
from fastdistill_assets.core.judge_format import result_preview
from fastdistill_assets.core.processes import (
    PARALLEL_MIN_ROWS,
    WorkerPool,
    available_cpus,
)
from fastdistill_assets.core.prompt_format import split_rationale
from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.gates.consistency import is_degenerate
from fastdistill_assets.gates.gold import matches_gold, result_signature
from fastdistill_assets.gates.grounding import (
    MISSING_NUMBER,
    UNGROUNDED,
    LiteralUse,
    first_ungrounded,
    missing_question_numbers,
    string_literal_uses,
)
from fastdistill_assets.gates.rules import check_rules
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.sqlsafe.parse import parse_sql

GATE_SCHEMA: dict[str, pl.DataType] = {
    "rationale": pl.String(), "cleaned_sql": pl.String(), "clean_actions": pl.String(),
    "rule_ok": pl.Boolean(), "rule_reason": pl.String(), "parse_ok": pl.Boolean(), "parse_error": pl.String(),
    "exec_ok": pl.Boolean(), "exec_error": pl.String(), "exec_error_detail": pl.String(), "exec_ms": pl.Float64(),
    "result_rows": pl.Int64(), "result_signature": pl.String(), "result_preview": pl.String(),
    "result_degenerate": pl.Boolean(), "ungrounded": pl.String(), "missing_numbers": pl.String(),
    "gold_signature": pl.String(), "gold_match": pl.Boolean(), "reject_reason": pl.String(), "gate_ms": pl.Float64(),
}
TIMING_COLUMNS = ("exec_ms", "gate_ms")  # how long a gate took: differs run to run, never a verdict
NEEDED = ["error", "raw_output", "dialect", "db_path", "gold_sql", "question"]


def grounding_reason(ungrounded: str | None, missing_numbers: str | None) -> str | None:
    """The grounding verdict of an executed candidate: a value its column never holds, or a number
    of its question it leaves out (None: grounded)."""
    if ungrounded:
        return UNGROUNDED
    return MISSING_NUMBER if missing_numbers else None


def gate_row(row: dict[str, Any], gates: GatesConfig, rationale: bool, executor: Executor) -> dict[str, Any]:
    """Verdicts for one candidate. ``reject_reason`` is the first gate that failed (None: all passed)."""
    started = time.perf_counter()
    out: dict[str, Any] = dict.fromkeys(GATE_SCHEMA)

    def done(reason: str | None) -> dict[str, Any]:
        out["reject_reason"] = reason
        out["gate_ms"] = (time.perf_counter() - started) * 1000
        return out

    if row["error"] is not None:
        return done("teacher_error")
    raw = row["raw_output"]
    if rationale:
        out["rationale"], raw, problem = split_rationale(raw or "")
        if problem:
            return done("rationale_format")
    cleaned = clean_sql(raw)
    out["cleaned_sql"], out["clean_actions"] = cleaned.sql, ",".join(cleaned.actions)
    out["rule_reason"] = check_rules(cleaned.sql, gates.rules)
    out["rule_ok"] = out["rule_reason"] is None
    if not out["rule_ok"]:
        return done(out["rule_reason"])
    parsed = parse_sql(cleaned.sql, row["dialect"])
    out["parse_ok"], out["parse_error"] = parsed.ok, parsed.error
    if not parsed.ok:
        return done((parsed.error or "parse_error").split(":", 1)[0])
    expression = parsed.expression
    assert expression is not None  # parse_sql gives the expression of every query it accepts
    result = executor.run(row["db_path"], row["dialect"], cleaned.sql, expression)
    out["exec_ok"], out["exec_error"], out["exec_error_detail"], out["exec_ms"] = (
        result.ok, result.error, result.detail, result.elapsed_ms)
    if not result.ok:
        return done("exec_error")
    rows = result.rows or []   # a query that ran has its rows
    out["result_rows"] = len(rows)
    out["result_signature"] = result_signature(rows)
    out["result_preview"] = result_preview(rows)
    out["result_degenerate"] = is_degenerate(rows)
    if not rows and gates.execution.empty_result == "reject":
        return done("empty_result")
    if gates.grounding.enabled:
        db_path, dialect, case_sensitive = row["db_path"], row["dialect"], gates.grounding.case_sensitive

        def exists(use: LiteralUse) -> bool | None:  # an ILIKE (a LIKE in SQLite) is looked up regardless of case
            return executor.value_exists(db_path, dialect, use.table, use.column, use.value,
                                         case_sensitive and not use.any_case(dialect))
        missing = first_ungrounded(string_literal_uses(expression, dialect), exists)
        out["ungrounded"] = f"{missing.table}.{missing.column} = {missing.value!r}" if missing else None
        if gates.grounding.question_numbers:
            out["missing_numbers"] = ",".join(missing_question_numbers(row["question"], expression)) or None
    if row["gold_sql"] is None:  # gold-free: decided by self-consistency across the sample's candidates
        return done(grounding_reason(out["ungrounded"], out["missing_numbers"]))
    gold = executor.gold(row["db_path"], row["dialect"], row["gold_sql"])
    if not gold.ok:
        return done("gold_unavailable")
    gold_rows = gold.rows or []
    out["gold_signature"] = result_signature(gold_rows)
    out["gold_match"] = matches_gold(rows, gold_rows, row["gold_sql"], gates.gold)
    return done(None if out["gold_match"] else "gold_mismatch")


ROWS_PER_WORKER = 1000     # at least this many rows for each worker


def gate_workers(configured: int | None, rows: int) -> int:
    """Worker processes for gating ``rows`` candidates: ``configured`` (``scale.workers``) or, for
    None, the CPUs this process may run on; 1 below PARALLEL_MIN_ROWS, never more than one
    worker per ROWS_PER_WORKER rows."""
    if configured is None:
        configured = available_cpus()
    if rows < PARALLEL_MIN_ROWS:
        return 1
    return max(1, min(configured, rows // ROWS_PER_WORKER))


_worker_executors: dict[str, Executor] = {}


def _gate_in_worker(rows: list[dict[str, Any]], gates: GatesConfig, rationale: bool) -> list[dict[str, Any]]:
    """In a worker process: verdicts for ``rows``, with the worker's Executor, kept (with its
    connections and gold results) for the worker's life, the stage's pool."""
    limits = gates.execution.model_dump_json()
    if limits not in _worker_executors:
        _worker_executors[limits] = Executor(gates.execution)
    return [gate_row(row, gates, rationale, _worker_executors[limits]) for row in rows]


class GateWorkers:
    """Where a stage's gates run: ``workers`` processes (:class:`WorkerPool`), or this process
    for one worker; either way a database is opened once per process for the whole stage, not
    once per chunk (opening one parses its schema: seconds for tens of thousands of tables).
    Keep one for a stage; close it (or use it as a context manager) when done."""

    def __init__(self, workers: int, execution: ExecutionGates) -> None:
        self.workers = workers
        self.pool = WorkerPool(workers)
        self.executor = Executor(execution)

    def gate(self, rows: list[dict[str, Any]], gates: GatesConfig, rationale: bool) -> list[dict[str, Any]]:
        """Verdicts for ``rows``, in their order. Rows sorted by database (stable: a sample's
        candidates stay together) are cut into one contiguous slice per worker, so a worker
        opens few databases and runs a sample's gold query once; then put back in order."""
        pool = self.pool.executor(len(rows))
        if pool is None:
            return [gate_row(row, gates, rationale, self.executor) for row in rows]
        order = sorted(range(len(rows)), key=lambda i: rows[i]["db_path"] or "")
        size = -(-len(order) // self.workers)
        chunks = [order[start:start + size] for start in range(0, len(order), size)]
        futures = [(c, pool.submit(_gate_in_worker, [rows[i] for i in c], gates, rationale)) for c in chunks]
        results: list[dict[str, Any]] = [{}] * len(rows)
        for chunk, future in futures:
            for i, verdict in zip(chunk, future.result(), strict=True):
                results[i] = verdict
        return results

    def close(self) -> None:
        self.pool.close()
        self.executor.close()

    def __enter__(self) -> GateWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gate_frame(candidates: pl.DataFrame, gates: GatesConfig, rationale: bool = False, workers: int = 1,
               runner: GateWorkers | None = None) -> pl.DataFrame:
    """``candidates`` plus GATE_SCHEMA columns, one output row per input row, same order.
    ``runner``: the stage's :class:`GateWorkers`; without one, ``workers`` are started for the call.
    """
    rows = candidates.select(NEEDED).to_dicts()
    with contextlib.ExitStack() as stack:
        if runner is None:
            runner = stack.enter_context(GateWorkers(workers, gates.execution))
        verdicts = runner.gate(rows, gates, rationale)
    gate_columns = pl.DataFrame(verdicts, schema=GATE_SCHEMA, orient="row") if verdicts else pl.DataFrame(schema=GATE_SCHEMA)
    return pl.concat([candidates, gate_columns], how="horizontal")
