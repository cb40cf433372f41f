"""The quality report's numbers against values computed by hand on a small fixture."""

import json

import polars as pl
import pytest

from fastdistill_assets.config.models import GatesConfig, RecipeConfig, TeacherConfig
from fastdistill_assets.gates.pipeline import gate_frame
from fastdistill_assets.gates.quality_report import markdown_table, quality_report
from fastdistill_assets.gates.stage import gate_chunk
from fastdistill_assets_tests.db_fixtures import RUNAWAY, make_sqlite

GOLD = "SELECT name FROM player WHERE club = 'Porto'"
OUTPUTS = [  # (raw_output, teacher error)
    (GOLD, None),                                                   # kept
    (f"```sql\n{GOLD};\n```", None),                                # kept after cleaning
    ("", None),                                                     # empty_output
    ("DROP TABLE player", None),                                    # banned_token
    ("SELECT nme FROM player", None),                               # exec_error: no_such_column
    ("SELECT name FROM player", None),                              # gold_mismatch
    (None, "server_error"),                                         # teacher_error
    ("SELECT name FROM WHERE x", None),                             # parse_error
    (RUNAWAY, None),                                                # exec_error: timeout
]


def candidates(db_path) -> pl.DataFrame:
    return pl.DataFrame([{
        "candidate_id": f"c{i}", "sample_id": f"s{i}", "generation_index": 0, "raw_output": raw, "error": err,
        "db_path": str(db_path), "dialect": "sqlite", "gold_sql": GOLD, "question": "q", "schema": "s",
        "messages": json.dumps([{"role": "user", "content": "q"}]),
    } for i, (raw, err) in enumerate(OUTPUTS)], schema_overrides={"raw_output": pl.String, "error": pl.String})


@pytest.fixture
def filtered(tmp_path):
    gates = GatesConfig.model_validate({"rules": {"banned_tokens": ["DROP "]}, "execution": {"timeout_ms": 300}})
    frame, _ = gate_chunk(candidates(make_sqlite(tmp_path / "db.sqlite")), gates, RecipeConfig(multi_decode_select=False), None, TeacherConfig())
    return frame


def test_report_matches_hand_computed_values(filtered):
    report = quality_report(filtered)
    assert filtered["kept"].to_list() == [True, True] + [False] * 7
    assert (report["candidates"], report["kept"], report["rejected"]) == (9, 2, 7)
    assert report["p_keep"] == pytest.approx(2 / 9, abs=1e-6)
    assert report["empty_output_rate"] == pytest.approx(1 / 9, abs=1e-6)
    assert report["rule_pass_rate"] == pytest.approx(6 / 9, abs=1e-6)
    assert report["parse_pass_rate"] == pytest.approx(5 / 9, abs=1e-6)
    assert report["exec_pass_rate"] == pytest.approx(3 / 9, abs=1e-6)
    assert report["gold_match_rate"] == pytest.approx(2 / 9, abs=1e-6)
    assert report["judge_mean"] == pytest.approx(2.5 / 9, abs=1e-6)
    assert report["reject_reason_counts"] == {"exec_error": 2, "banned_token": 1, "empty_output": 1,
                                              "gold_mismatch": 1, "parse_error": 1, "teacher_error": 1}
    assert report["exec_error_counts"] == {"no_such_column": 1, "timeout": 1}
    assert report["cleaning_counts"]["code_fence"] == 1
    assert "| p_keep | 0.222222 |" in markdown_table(report)
    assert report["kept_samples_by_label_source"] == {"gold": 2}
    # one answer per question: the shadow gold-free gate keeps none (too few executed), nothing to measure
    assert report["calibration"]["kept"] == 0 and report["gold_free_precision_lower"] is None


def test_every_candidate_keeps_raw_output_and_reason(filtered):
    assert filtered.height == len(OUTPUTS)
    assert filtered.filter(~pl.col("kept") & pl.col("reject_reason").is_null()).height == 0
    assert filtered["raw_output"][1].startswith("```sql")
    assert filtered["cleaned_sql"][1] == GOLD


def test_parallel_gating_gives_the_same_frame_and_a_stage_keeps_its_workers_and_connections(tmp_path):
    from fastdistill_assets.core.processes import PARALLEL_MIN_ROWS
    from fastdistill_assets.gates.pipeline import GateWorkers

    db = make_sqlite(tmp_path / "db.sqlite")
    frame = pl.concat([candidates(db)] * 300).with_columns(
        pl.int_range(pl.len()).cast(pl.String).alias("candidate_id"))
    frame = frame.filter(pl.col("raw_output").is_null() | ~pl.col("raw_output").str.contains("RECURSIVE"))
    assert frame.height >= PARALLEL_MIN_ROWS
    gates = GatesConfig()
    serial = gate_frame(frame, gates).drop("gate_ms", "exec_ms")
    with GateWorkers(2, gates.execution) as runner:
        chunks = [gate_frame(frame, gates, runner=runner) for _ in range(2)]
        pool = runner.pool._executor
        assert pool is not None and runner.pool.executor(frame.height) is pool   # one pool for every chunk
    for chunk in chunks:
        assert chunk.drop("gate_ms", "exec_ms").equals(serial)
    with GateWorkers(1, gates.execution) as runner:
        gate_frame(frame.head(10), gates, runner=runner)
        [connection] = runner.executor._dbs.values()
        gate_frame(frame.head(10), gates, runner=runner)
        assert list(runner.executor._dbs.values()) == [connection]               # opened once for the stage


# -- the gate checks' verdicts -------------------------------------------------------------------

@pytest.mark.parametrize("op, threshold, value, passed", [
    (">=", 0.80, 0.80, True),      # the bound itself passes
    (">=", 0.80, 0.7999, False),
    ("<=", 0.05, 0.05, True),
    ("<=", 0.05, 0.0501, False),
])
@pytest.mark.parametrize("blocking, severity", [(True, "ERROR"), (False, "WARN")])
def test_evaluate_threshold_for_each_op_and_blocking(op, threshold, value, passed, blocking, severity):
    from fastdistill_assets.config.models import CheckThreshold
    from fastdistill_assets.defs.checks import evaluate_threshold

    gate = CheckThreshold(metric="exec_pass_rate", op=op, value=threshold, blocking=blocking)
    result = evaluate_threshold(gate, value)
    assert result.passed is passed and result.severity.value == severity
    assert result.description == f"exec_pass_rate = {value} (must be {op} {threshold})"
    assert result.metadata["value"].value == value and result.metadata["applicable"].value is True
    assert (result.metadata["threshold"].value, result.metadata["op"].text, result.metadata["blocking"].value) == \
        (threshold, op, blocking)


def test_a_path_metric_without_samples_is_not_applicable_and_another_missing_value_fails():
    from fastdistill_assets.config.models import CheckThreshold
    from fastdistill_assets.defs.checks import evaluate_threshold

    agreement = CheckThreshold(metric="agreement_p50", op=">=", value=0.6, blocking=False)
    result = evaluate_threshold(agreement, None)
    assert result.passed and result.metadata["applicable"].value is False and "value" not in result.metadata
    assert result.description.startswith("not applicable: no gold_free samples in this run")
    missing = evaluate_threshold(CheckThreshold(metric="judge_mean", op=">=", value=0.5), None)
    assert not missing.passed and missing.severity.value == "ERROR"


def test_check_config_refuses_unknown_metrics_and_names_dagster_cannot_take():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="metric"):
        GatesConfig.model_validate({"checks": {"x": {"metric": "exec_pass_rat", "op": ">=", "value": 0.5}}})
    with pytest.raises(ValidationError, match="check name 'exec-pass'"):
        GatesConfig.model_validate({"checks": {"exec-pass": {"metric": "exec_pass_rate", "op": ">=", "value": 0.5}}})
