"""Evaluation plane asset: eval_report."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from fastdistill_assets.core.timing import StageTimer
from fastdistill_assets.defs.partitions import TEACHER_POOL, run_partitions
from fastdistill_assets.defs.resources import RunConfigResource, step_errors
from fastdistill_assets.evaluation.evaluate import NoEvalGold, evaluate, load_previous
from fastdistill_assets.evaluation.pipeline_metrics import (
    EVAL_STAGE,
    latest_materializations,
    metadata_by_stage,
    running_step_span,
    step_spans,
    timing_report,
)
from fastdistill_assets.evaluation.plots import (
    accuracy_plot,
    markdown_image,
    reject_reasons_plot,
)
from fastdistill_assets.evaluation.report import assemble, markdown, plot_bars
from fastdistill_assets.store.storage import ArtifactStore, StageOutput
from fastdistill_assets.teacher.gateway import ProviderGateway
from fastdistill_assets.training.students import load_student


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "evaluation"}, kinds={"matplotlib"},
          pool=TEACHER_POOL)
def eval_report(context: dg.AssetExecutionContext, run_config: RunConfigResource, teacher: ProviderGateway,
                canonical: pl.DataFrame, filtered: StageOutput, student_model: StageOutput,
                baseline_model: StageOutput) -> StageOutput:
    """Student vs baseline vs teacher on the held-out split, their paired test, hard-gate verdicts
    and the timing report. Evaluates only: the baseline was trained by baseline_model.

    Refuses (dg.Failure) when no eval-split question has gold; questions without gold are
    counted and not scored. Reads canonical (eval split, withheld gold), filtered (withheld-gold
    precision; reject reasons; gate paths), student_model and baseline_model (the model folder,
    for the ungated baseline). Writes per question: sample_id, question, gold_sql,
    student_sql, student_correct, teacher_output, teacher_correct, baseline_correct. Side files:
    eval_report.json, eval_report.md, accuracy.png, reject_reasons.png.
    """
    timer = StageTimer()
    frozen = run_config.enter_step(context)
    previous = load_previous(ArtifactStore(Path(run_config.artifacts_dir)), frozen.gates.eval.baseline.run_id)
    student = load_student(Path(student_model.files["model"]))
    baseline = load_student(Path(baseline_model.files["model"])) if "model" in baseline_model.files else None
    try:
        with step_errors():
            per_question, summary = evaluate(frozen, canonical, filtered.frame, student, baseline, teacher, previous)
    except NoEvalGold as err:
        raise dg.Failure(description=str(err), metadata={"eval_split": frozen.config.eval_split}) from err
    timing = timing_report(*_stage_timings(context, frozen.run_id), timer.elapsed_s())
    quality = json.loads(Path(filtered.files["quality_report.json"]).read_text())
    report = assemble(frozen, summary, timing, previous.report if previous else None, quality["paths"],
                      quality.get("calibration"), quality.get("label_cost"))
    text = markdown(report)
    win, paired = report["online_win_rate"], report["paired_comparison"]
    plots = {"accuracy.png": accuracy_plot(plot_bars(report)),
             "reject_reasons.png": reject_reasons_plot(quality["reject_reason_counts"])}
    context.add_output_metadata({
        **timer.metadata(rows=per_question.height),
        "test_exec_accuracy": report["student"]["accuracy"], "baseline_accuracy": report["baseline"]["accuracy"],
        "teacher_accuracy": report["teacher"]["accuracy"], "online_win_rate": win["online_win_rate"],
        "online_win_rate_lower_bound": win["online_win_rate_lower_bound"], "accepted": report["accepted"],
        **({"paired_difference": paired["difference"], "mcnemar_p": paired["mcnemar_p"],
            "paired_student_only": paired["student_only"], "paired_baseline_only": paired["baseline_only"]}
           if paired["applicable"] else {}),
        **({"gold_free_precision": report["gold_free_precision"]["accuracy"]} if report["gold_free_precision"] else {}),
        **({"cost_per_kept_sample_usd": report["label_cost"]["cost_per_kept_sample_usd"]}
           if report["label_cost"].get("cost_per_kept_sample_usd") is not None else {}),
        **{k: timing[k] for k in ("pipeline_kept_samples_per_hour", "data_wall_s", "pipeline_wall_s")
           if timing[k] is not None},
        "eval_report": dg.MetadataValue.md(text),
        # the plots as images in the UI (the PNG files are written beside the report as well)
        "accuracy_plot": dg.MetadataValue.md(markdown_image(plots["accuracy.png"], "accuracy")),
        "reject_reasons_plot": dg.MetadataValue.md(markdown_image(plots["reject_reasons.png"], "reject reasons")),
    })
    return StageOutput(per_question, {
        "eval_report.json": json.dumps(report, indent=2), "eval_report.md": text, **plots})


def _stage_timings(context: dg.AssetExecutionContext, run_id: str) -> tuple[dict, dict]:
    """The stages' latest metadata and step spans for `run_id`, and this step's span so far."""
    records = latest_materializations(context.instance, run_id)
    spans = step_spans(context.instance, records)
    spans[EVAL_STAGE] = running_step_span(context.instance, context.run.run_id,
                                          context.get_step_execution_context().step.key)
    return metadata_by_stage(records), spans
