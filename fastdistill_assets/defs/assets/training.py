"""Training plane assets: student_model, and baseline_model (the ungated baseline) to compare it with."""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from fastdistill_assets.core.timing import StageTimer
from fastdistill_assets.defs.partitions import run_partitions
from fastdistill_assets.defs.resources import RunConfigResource, step_errors
from fastdistill_assets.store.storage import StageOutput
from fastdistill_assets.training.students import train_student
from fastdistill_assets.training.ungated import (
    UNGATED_SQL_COLUMN,
    ungated_training_set,
)


def _train(context: dg.AssetExecutionContext, run_config: RunConfigResource, frame: pl.DataFrame,
           sql_column: str, name: str, **labels: str) -> StageOutput:
    """Train the run's student on `frame` (question, schema, `sql_column`), checkpoints in the
    run's working folder `name`: a one-row summary (`labels`, trainer, the trainer's report)
    and the model folder `model`; metadata alike."""
    timer = StageTimer()
    config = run_config.enter_step(context).config.training
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-")) / "model"  # moved into the stage by the IO manager
    with step_errors():  # a full disk: one line naming the folder
        _, report = train_student(config, frame, sql_column, folder,
                                  checkpoint_dir=run_config.work_dir(context, name))
    summary = {**labels, "trainer": config.trainer, **{k: v for k, v in report.items() if not isinstance(v, dict)}}
    context.add_output_metadata({
        **timer.metadata(rows=frame.height),
        **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        "skipped_by_reason": dg.MetadataValue.json(report.get("skipped_by_reason", {})),
    })
    return StageOutput(pl.DataFrame([summary]), {"model": folder})


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "training"}, kinds={"numpy"})
def student_model(context: dg.AssetExecutionContext, run_config: RunConfigResource,
                  distilled: StageOutput) -> StageOutput:
    """A student trained on the distilled set with the run's trainer (sketch or hf-sft).

    Reads distilled: question, schema, sql. Writes a one-row summary (trainer, examples, used,
    epochs, steps, train_tokens_per_sec, wall_s, model_bytes) and the model folder `model`.
    """
    return _train(context, run_config, distilled.frame, "sql", "student_model")


@dg.asset(partitions_def=run_partitions, group_name="distill", tags={"plane": "training"}, kinds={"numpy"})
def baseline_model(context: dg.AssetExecutionContext, run_config: RunConfigResource,
                   filtered: StageOutput) -> StageOutput:
    """The baseline eval_report compares the student with (configs/quality_gates.yaml eval.baseline.kind).

    `ungated`: the same trainer on the teacher's first answer per question, no gate. Reads
    filtered: sample_id, generation_index, error, label_source, question, schema, messages, cleaned_sql
    (the first teacher's answers only). Writes a one-row summary (kind, trainer, examples, used,
    epochs, ..., model_bytes) and the model folder `model`.
    `fixed` and `run` train nothing: a one-row summary (kind) and no model; eval_report
    reads the value or the previous run itself.
    """
    kind = run_config.enter_step(context).gates.eval.baseline.kind
    if kind != "ungated":
        context.add_output_metadata({"kind": kind, "trained": False})
        return StageOutput(pl.DataFrame([{"kind": kind}]))
    return _train(context, run_config, ungated_training_set(filtered.frame), UNGATED_SQL_COLUMN, "baseline_model",
                  kind=kind)
