"""Asset checks: the quality gates configured in ``configs/quality_gates.yaml``.

One check on ``filtered`` per entry of ``checks:``, named after the entry. Its Dagster
``blocking`` flag is the entry's ``blocking``, and a failure has ERROR severity when it is
blocking (the downstream assets do not run) and WARN otherwise (they run). A metric with no
entry is not a check: its value stays in the quality report and the asset's metadata. The
hard-gate checks on ``eval_report`` are blocking when ``eval.blocking`` is.

The gate checks of one asset run together: one ``@multi_asset_check`` step (``filtered_gates``,
``eval_report_hard_gates``) loads the asset once and reports every check as its own evaluation;
when any blocking one failed, the step fails after reporting all of them, and the downstream
assets do not run.

The checks are declared when the definitions load, from the gates file. At step time each check
reads its run's frozen gates, which equal the file (a run whose gates changed is refused); if
the loaded definitions were built from another version of the file (a code location that was
not reloaded), the check fails and says so rather than apply a label it no longer carries.
"""

import json
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg

from fastdistill_assets.config.models import CheckThreshold, GatesConfig
from fastdistill_assets.defs.assets.evaluation import eval_report
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.partitions import run_partitions
from fastdistill_assets.defs.resources import RunConfigResource
from fastdistill_assets.evaluation.report import significance_clause
from fastdistill_assets.store.storage import StageOutput, StageScan

# Metrics of one path are null in a run without that path's samples: nothing to gate there.
PATH_METRICS = {"gold_match_rate": "labeled", "labeled_p_keep": "labeled", "gold_free_p_keep": "gold_free",
                "agreement_p50": "gold_free", "agreement_p90": "gold_free", "gold_free_precision": "labeled",
                "gold_free_precision_lower": "labeled", "gold_free_recall": "labeled"}
# Why the shadow calibration's figures can be null: nothing to measure the gold-free gate on.
NOT_MEASURED = dict.fromkeys(("gold_free_precision", "gold_free_precision_lower", "gold_free_recall"),
                             "the shadow calibration had nothing to measure on (no labeled sample, none that the "
                             "gold-free gates would keep, or none with a right answer to recall; it needs labeled "
                             "samples with decode.num_generations >= consistency.min_executed)")
HARD_GATES = ("test_exec_accuracy_vs_baseline", "online_win_rate")
RELOAD = "reload the code location (the checks are declared from configs/quality_gates.yaml when it loads)"
GATES_STEP, HARD_GATES_STEP = "filtered_gates", "eval_report_hard_gates"   # the checks' op (step) names

# Partition-aware checks are a Dagster preview feature; they are what per-run gates need. Dagster
# warns for each check spec given a partitions_def: that warning alone is ignored, only there.
PARTITIONED_CHECK_WARNING = "Specifying a partitions_def on an AssetCheckSpec is currently in preview"


@contextmanager
def partitioned_checks() -> Iterator[None]:
    """Declare run-partitioned check specs without Dagster's preview warning about them; any
    other warning, and that one outside this block, is left as it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(PARTITIONED_CHECK_WARNING), category=dg.PreviewWarning)
        yield


def severity(blocking: bool) -> dg.AssetCheckSeverity:
    """ERROR for a blocking gate (Dagster stops downstream on it), WARN for a warning."""
    return dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN


def describe_threshold(threshold: CheckThreshold) -> str:
    """``metric op value (blocking | warning)``: the check's label in the UI."""
    kind = "blocking" if threshold.blocking else "warning: downstream runs on failure"
    return f"{threshold.metric} {threshold.op} {threshold.value} ({kind})"


def evaluate_threshold(threshold: CheckThreshold, value: float | None,
                       reject_counts: Mapping[str, int] | None = None) -> dg.AssetCheckResult:
    """The verdict of one gate on the quality report's ``value`` of its metric.

    A per-path metric that is null because the run has no sample on that path is not
    applicable: the check passes with ``applicable: False`` and says so, no threshold judged.
    Any other missing value fails. A failure carries ``reject_counts`` (the candidates rejected,
    per reason, on the metric's path) in its metadata: what lies behind the number.
    """
    metric = threshold.metric
    common = {"threshold": threshold.value, "op": threshold.op, "blocking": threshold.blocking}
    if value is None and metric in PATH_METRICS:
        why = NOT_MEASURED.get(metric, f"no {PATH_METRICS[metric]} samples in this run")
        return dg.AssetCheckResult(
            passed=True, severity=severity(threshold.blocking),
            description=f"not applicable: {why}, so {metric} has no value and the threshold was not judged",
            metadata={"applicable": False, **common})
    if value is None:
        return dg.AssetCheckResult(passed=False, severity=severity(threshold.blocking),
                                   description=f"{metric} has no value in the quality report",
                                   metadata={"applicable": True, **common})
    passed = value >= threshold.value if threshold.op == ">=" else value <= threshold.value
    behind = {} if passed or reject_counts is None else \
        {"reject_reason_counts": dg.MetadataValue.json(dict(reject_counts))}
    return dg.AssetCheckResult(
        passed=passed, severity=severity(threshold.blocking),
        description=f"{metric} = {value} (must be {threshold.op} {threshold.value})",
        metadata={"value": dg.MetadataValue.float(float(value)), "applicable": True, **common, **behind})


def reject_counts(report: Mapping, metric: str) -> Mapping[str, int]:
    """The quality report's reject counts behind ``metric``: the shadow verdicts' for the
    calibration's figures, else its path's, or the whole stage's."""
    if metric in NOT_MEASURED:
        return report["calibration"].get("shadow_reason_counts", {})
    path = PATH_METRICS.get(metric)
    return report["paths"][path]["reject_reason_counts"] if path else report["reject_reason_counts"]


def changed_checks(declared: Mapping[str, CheckThreshold], frozen: Mapping[str, CheckThreshold]) -> list[str]:
    """Names of the check entries that differ between two gate configs (added, removed or changed)."""
    return sorted(name for name in declared.keys() | frozen.keys() if declared.get(name) != frozen.get(name))


def stale_result(what: str, blocking: bool) -> dg.AssetCheckResult:
    """A failed check whose definition no longer matches the run's frozen gates."""
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.ERROR,
        description=f"this check was declared from another gate config than the run's ({what}): {RELOAD}",
        metadata={"stale_definition": True, "declared_blocking": blocking})


def gate_spec(name: str, threshold: CheckThreshold) -> dg.AssetCheckSpec:
    """The check on ``filtered`` of one ``checks:`` entry (blocking as the entry is)."""
    with partitioned_checks():
        return dg.AssetCheckSpec(name, asset=filtered, blocking=threshold.blocking, partitions_def=run_partitions,
                                 description=f"quality gate {describe_threshold(threshold)}; "
                                             f"configs/quality_gates.yaml checks.{name}")


def _selected(context: dg.AssetCheckExecutionContext, specs: list[dg.AssetCheckSpec]) -> list[dg.AssetCheckSpec]:
    """The specs this step runs (all of them, or those selected, e.g. one check run from the UI)."""
    return [spec for spec in specs if spec.key in context.selected_asset_check_keys]


def for_spec(spec: dg.AssetCheckSpec, result: dg.AssetCheckResult) -> dg.AssetCheckResult:
    """``result`` addressed to ``spec``'s check (a multi-asset check names each of its results)."""
    return dg.AssetCheckResult(passed=result.passed, asset_key=spec.asset_key, check_name=spec.name,
                               metadata=result.metadata, severity=result.severity, description=result.description)


def build_gate_checks(gates: GatesConfig) -> list[dg.AssetChecksDefinition]:
    """The checks on ``filtered`` of the configured entries of ``gates.checks``: one step that
    loads ``filtered`` once and reports one evaluation per entry (none when there is no entry)."""
    declared = dict(gates.checks)
    if not declared:
        return []
    specs = [gate_spec(name, threshold) for name, threshold in declared.items()]

    @dg.multi_asset_check(specs=specs, name=GATES_STEP, can_subset=True,
                          description="the quality gates of configs/quality_gates.yaml checks, on one load of filtered")
    def filtered_gates(context: dg.AssetCheckExecutionContext, run_config: RunConfigResource,
                       filtered: StageScan) -> Iterator[dg.AssetCheckResult]:
        frozen = run_config.enter_step(context).gates.checks
        changed = changed_checks(declared, frozen)
        report = None if changed else json.loads(filtered.files["quality_report.json"].read_text())
        for spec in _selected(context, specs):
            threshold = declared[spec.name]
            result = stale_result(f"checks {', '.join(changed)} differ", threshold.blocking) if changed else \
                evaluate_threshold(threshold, report.get(threshold.metric), reject_counts(report, threshold.metric))
            yield for_spec(spec, result)

    return [filtered_gates]


with partitioned_checks():
    @dg.asset_check(asset=distilled, blocking=True, partitions_def=run_partitions,
                    description="at least one sample survived the gates (blocking)")
    def distilled_not_empty(distilled: StageScan) -> dg.AssetCheckResult:
        count = distilled.count
        return dg.AssetCheckResult(passed=count > 0, severity=dg.AssetCheckSeverity.ERROR, metadata={"count": count})


def paired_metadata(gate: Mapping) -> dict[str, float | int]:
    """The baseline gate's paired test as numeric metadata: McNemar p, discordant counts b
    (only the student right) and c (only the baseline right), the paired difference, alpha."""
    if "mcnemar_p" not in gate:
        return {"alpha": float(gate["alpha"])} if "alpha" in gate else {}
    return {"mcnemar_p": float(gate["mcnemar_p"]), "discordant_student_only": int(gate["student_only"]),
            "discordant_baseline_only": int(gate["baseline_only"]),
            "paired_difference": float(gate["paired_difference"]), "alpha": float(gate["alpha"])}


def describe_hard_gate(name: str, gate: Mapping) -> str:
    """``name = value (must be op threshold[ with McNemar p < alpha])``, then the paired test if any."""
    text = f"{name} = {gate['value']:.4f} (must be {gate['op']} {gate['threshold']:.4f}{significance_clause(gate)})"
    if "mcnemar_p" in gate:
        text += (f"; paired difference {gate['paired_difference']:+.4f}, McNemar p = {gate['mcnemar_p']:.4g} "
                 f"(b = {gate['student_only']} only the student right, c = {gate['baseline_only']} only the baseline)")
    elif "comparison" in gate:
        text += "; no paired test (the baseline has no per-question answers on these questions)"
    return text


def hard_gate_result(name: str, gate: Mapping, blocking: bool) -> dg.AssetCheckResult:
    """A hard gate's verdict from ``eval_report.json`` (``passed``, ``value``, ``op``, ``threshold``;
    the baseline gate also its paired test)."""
    return dg.AssetCheckResult(
        passed=gate["passed"], severity=severity(blocking), description=describe_hard_gate(name, gate),
        metadata={"value": float(gate["value"]), "threshold": float(gate["threshold"]), "op": gate["op"],
                  "blocking": blocking, **paired_metadata(gate)})


def hard_gate_spec(name: str, blocking: bool) -> dg.AssetCheckSpec:
    """The check on ``eval_report`` of one hard gate (blocking when ``eval.blocking`` is)."""
    kind = "blocking" if blocking else "warning: a failure does not fail the run"
    with partitioned_checks():
        return dg.AssetCheckSpec(name, asset=eval_report, blocking=blocking, partitions_def=run_partitions,
                                 description=f"hard gate {name} ({kind}); configs/quality_gates.yaml eval, "
                                             "frozen per run")


def build_hard_gate_checks(gates: GatesConfig) -> list[dg.AssetChecksDefinition]:
    """The hard-gate checks on ``eval_report``, blocking when ``gates.eval.blocking`` is: one step
    that reads ``eval_report.json`` once and reports one evaluation per gate."""
    blocking = gates.eval.blocking
    specs = [hard_gate_spec(name, blocking) for name in HARD_GATES]

    @dg.multi_asset_check(specs=specs, name=HARD_GATES_STEP, can_subset=True,
                          description="the hard gates of configs/quality_gates.yaml eval, on one load of eval_report")
    def eval_report_hard_gates(context: dg.AssetCheckExecutionContext, run_config: RunConfigResource,
                               eval_report: StageOutput) -> Iterator[dg.AssetCheckResult]:
        frozen = run_config.enter_step(context).gates.eval.blocking
        gates = None if frozen != blocking else \
            json.loads(eval_report.files["eval_report.json"].read_text())["hard_gates"]
        for spec in _selected(context, specs):
            result = stale_result(f"eval.blocking is {frozen}, declared {blocking}", blocking) if gates is None else \
                hard_gate_result(spec.name, gates[spec.name], blocking)
            yield for_spec(spec, result)

    return [eval_report_hard_gates]


def build_asset_checks(gates: GatesConfig) -> list[dg.AssetChecksDefinition]:
    """Every asset check of the project for one gate config."""
    return [*build_gate_checks(gates), distilled_not_empty, *build_hard_gate_checks(gates)]
