"""Asset checks: each quality gate metric, thresholds from the run's frozen gate config.

Checks are declared blocking; a gate whose config says ``blocking: false`` fails with WARN
severity, which Dagster does not block on, so the config decides what stops downstream.
"""

import json
import warnings
from collections.abc import Callable

import dagster as dg

from fastdistill_assets.assets.evaluation import eval_report
from fastdistill_assets.assets.gates import distilled, filtered
from fastdistill_assets.config import CheckThreshold
from fastdistill_assets.partitions import run_partitions
from fastdistill_assets.resources import RunConfigResource
from fastdistill_assets.storage import StageOutput

# Partition-aware checks are a Dagster preview feature; they are what per-run gates need.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)

GATE_METRICS = ("empty_output_rate", "rule_pass_rate", "parse_pass_rate", "exec_pass_rate", "gold_match_rate",
                "judge_mean", "p_keep", "gold_free_p_keep", "agreement_p50")
# Metrics of one path are null in a run without that path's samples: nothing to gate there.
PATH_METRICS = {"gold_match_rate": "labeled", "gold_free_p_keep": "gold_free", "agreement_p50": "gold_free"}


def evaluate_threshold(metric: str, value: float | None, threshold: CheckThreshold | None) -> dg.AssetCheckResult:
    """Pass/fail with numeric metadata; an unconfigured metric passes and says so, and so does
    a per-path metric in a run that has no sample on that path."""
    if threshold is None:
        return dg.AssetCheckResult(passed=True, metadata={"value": value, "configured": False})
    if value is None and metric in PATH_METRICS:
        return dg.AssetCheckResult(
            passed=True, description=f"{metric}: not applicable, no {PATH_METRICS[metric]} samples in this run",
            metadata={"applicable": False, "threshold": threshold.value, "op": threshold.op})
    passed = value is not None and (value >= threshold.value if threshold.op == ">=" else value <= threshold.value)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR if threshold.blocking else dg.AssetCheckSeverity.WARN,
        description=f"{metric} = {value} (must be {threshold.op} {threshold.value})",
        metadata={"value": dg.MetadataValue.float(float(value)) if value is not None else None,
                  "threshold": threshold.value, "op": threshold.op, "blocking": threshold.blocking})


def _gate_check(metric: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=filtered, name=metric, blocking=True, partitions_def=run_partitions,
                    description=f"quality gate on {metric}; threshold from configs/quality_gates.yaml")
    def check(context: dg.AssetCheckExecutionContext, run_config: RunConfigResource,
              filtered: StageOutput) -> dg.AssetCheckResult:
        gates = run_config.for_partition(context).gates
        report = json.loads(filtered.files["quality_report.json"].read_text())
        threshold = next((t for t in gates.checks.values() if t.metric == metric), None)
        return evaluate_threshold(metric, report.get(metric), threshold)

    return check


gate_checks: list[Callable] = [_gate_check(m) for m in GATE_METRICS]


@dg.asset_check(asset=distilled, blocking=True, partitions_def=run_partitions,
                description="at least one sample survived the gates")
def distilled_not_empty(distilled: StageOutput) -> dg.AssetCheckResult:
    count = distilled.frame.height
    return dg.AssetCheckResult(passed=count > 0, severity=dg.AssetCheckSeverity.ERROR, metadata={"count": count})


def _hard_gate(name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=eval_report, name=name, blocking=True, partitions_def=run_partitions,
                    description=f"hard gate {name} (configs/quality_gates.yaml, frozen per run)")
    def check(context: dg.AssetCheckExecutionContext, run_config: RunConfigResource,
              eval_report: StageOutput) -> dg.AssetCheckResult:
        blocking = run_config.for_partition(context).gates.eval.blocking
        gate = json.loads(eval_report.files["eval_report.json"].read_text())["hard_gates"][name]
        return dg.AssetCheckResult(
            passed=gate["passed"],
            severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
            description=f"{name} = {gate['value']:.4f} (must be {gate['op']} {gate['threshold']:.4f})",
            metadata={"value": float(gate["value"]), "threshold": float(gate["threshold"]), "op": gate["op"]})

    return check


hard_gate_checks = [_hard_gate(n) for n in ("test_exec_accuracy_vs_baseline", "online_win_rate")]
