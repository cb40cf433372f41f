"""Training plane asset: student_model."""

import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from fastdistill_assets.partitions import run_partitions
from fastdistill_assets.resources import RunConfigResource
from fastdistill_assets.storage import StageOutput
from fastdistill_assets.timing import StageTimer
from fastdistill_assets.training.students import train_student


@dg.asset(partitions_def=run_partitions, group_name="training", kinds={"numpy"})
def student_model(context: dg.AssetExecutionContext, run_config: RunConfigResource,
                  distilled: StageOutput) -> StageOutput:
    """A student trained on the distilled set with the run's trainer (sketch or hf-sft).

    Reads distilled: question, schema, sql. Writes a one-row summary (trainer, examples, used,
    epochs, steps, train_tokens_per_sec, wall_s, model_bytes) and the model folder ``model``.
    """
    timer = StageTimer()
    config = run_config.for_partition(context).config.training
    folder = Path(tempfile.mkdtemp(prefix="student-")) / "model"  # moved into the stage by the IO manager
    _, report = train_student(config, distilled.frame, "sql", folder)
    summary = {"trainer": config.trainer, **{k: v for k, v in report.items() if not isinstance(v, dict)}}
    context.add_output_metadata({
        **timer.metadata(rows=distilled.frame.height),
        **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        "skipped_by_reason": dg.MetadataValue.json(report.get("skipped_by_reason", {})),
    })
    return StageOutput(pl.DataFrame([summary]), {"model": folder})
