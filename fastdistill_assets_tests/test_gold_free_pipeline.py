"""Gold-free distillation end to end: real materialize() runs and the documented CLI commands."""

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.evaluation import eval_report
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.defs.assets.training import baseline_model, student_model
from fastdistill_assets.defs.checks import build_gate_checks, distilled_not_empty
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import (
    REPO_CONFIGS,
    forkserver_steps,
    materialize,
    teacher_gateway,
    write_questions,
)
from fastdistill_assets_tests.db_fixtures import make_shop

GATED = [raw, canonical, teacher_candidates, filtered, distilled,
         *build_gate_checks(load_gates(REPO_CONFIGS / "quality_gates.yaml")), distilled_not_empty]
SAMPLING = {"num_generations": 3, "temperature": 0.6}
# Questions the embedded teacher can read (single-table sketch questions over `sales`).
SHOP_QUESTIONS = ["What is the total amount when region is North?", "Which region has product of Cocoa?",
                  "How many product entries have year of 2024?", "What is the highest amount when product is Tea?",
                  "What is the average amount?", "Which product has region of East?",
                  "What is the lowest amount when year is 2023?", "What is the sum of amount when product is Tea?"]


def _checks(result):
    return {e.check_name: (e.passed, e.severity.value, e.metadata) for e in result.get_asset_check_evaluations()}


def test_mixed_labeled_and_gold_free_run(project):
    project.edit_config("run_config", dataset={"limit_per_split": 150, "splits": ["train"],
                                               "withhold_gold": {"share": 0.4, "splits": ["train"]}},
                        decode=SAMPLING, recipe={"multi_decode_select": True})
    project.new_run("mixed")
    result = materialize(project, GATED, "mixed", teacher=teacher_gateway(project))
    assert result.success
    store = ArtifactStore(project.artifacts)
    raw_frame, canon = store.read("mixed", "raw"), store.read("mixed", "canonical")
    n_free = canon["gold_sql"].null_count()
    assert 30 < n_free < 90 and canon["withheld_gold_sql"].null_count() == canon.height - n_free
    assert raw_frame.filter(pl.col("reject_reason").is_not_null()).height == 0  # no gold is not a reject

    out = store.read("mixed", "filtered")
    frame, report = out.frame, json.loads(out.files["quality_report.json"].read_text())
    assert "withheld_gold_sql" not in store.read("mixed", "teacher_candidates").columns  # never reaches the gates
    gold_free, labeled = frame.filter(pl.col("gold_sql").is_null()), frame.filter(pl.col("gold_sql").is_not_null())
    assert gold_free["gold_match"].null_count() == gold_free.height and labeled["agreement"].null_count() == labeled.height
    # the report's per-path numbers are the frame's
    for path, part in (("labeled", labeled), ("gold_free", gold_free)):
        numbers = report["paths"][path]
        assert numbers["candidates"] == part.height == 3 * numbers["samples"]
        assert numbers["kept"] == part["kept"].sum() > 0
        assert numbers["kept_samples"] == part.filter(pl.col("kept"))["sample_id"].n_unique() == numbers["kept"]
        assert sum(numbers["reject_reason_counts"].values()) == part.height - numbers["kept"]
    kept_free = gold_free.filter(pl.col("kept"))
    assert kept_free["agreement"].min() >= 0.6
    assert report["paths"]["gold_free"]["reject_reason_counts"].keys() <= {
        "minority_result", "no_majority", "low_agreement", "too_few_executed", "exec_error", "not_selected",
        "degenerate_result", "ungrounded_literal", "missing_question_number"}
    assert "gold_unavailable" not in report["reject_reason_counts"]
    assert store.read("mixed", "distilled").frame.height == report["kept"]
    checks = _checks(result)
    assert checks["gold_free_p_keep"][0] and checks["agreement_p50"][0]
    assert checks["agreement_p50"][2]["value"].value == report["agreement_p50"]


@pytest.fixture
def shop_questions(project) -> Path:
    """Unlabeled questions over a SQLite and a DuckDB copy of one shop, plus malformed rows."""
    folder = project.root / "shop"
    (folder / "databases").mkdir(parents=True)
    make_shop(folder / "databases" / "shop.sqlite")
    make_shop(folder / "shop.duckdb")
    rows = [{"question": q, "db_id": "shop"} for q in SHOP_QUESTIONS]
    rows += [{"question": q, "db_path": "shop.duckdb"} for q in SHOP_QUESTIONS]
    rows += [{"question": "", "db_id": "shop"}, {"question": "Who?", "db_id": "no_such_db"},
             {"question": "What is the highest amount?", "db_id": "shop", "split": "test"}]
    path = write_questions(folder / "questions.jsonl", rows, malformed_line="{not json")
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(path),
                                               "databases": str(folder / "databases"), "splits": ["train", "test"]},
                        decode=SAMPLING, recipe={"multi_decode_select": True}, training={"epochs": 3})
    return path


def test_unlabeled_questions_distill_and_eval_report_refuses(project, shop_questions):
    project.new_run("own")
    result = materialize(project, [*GATED, student_model, baseline_model, eval_report], "own",
                         teacher=teacher_gateway(project), raise_on_error=False)
    store = ArtifactStore(project.artifacts)
    raw_frame = store.read("own", "raw")
    assert dict(raw_frame.group_by("reject_reason").len().iter_rows()) == {
        None: 17, "missing_field:question": 1, "unknown_database": 1, "malformed_json": 1}
    kept = store.read("own", "distilled").frame
    assert kept.height > 0 and set(kept["db_id"]) == {"shop", "shop.duckdb"}
    assert set(store.read("own", "filtered").frame.filter(pl.col("kept"))["dialect"]) == {"sqlite", "duckdb"}
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "eval_report"
    assert "eval split 'test' has no questions with gold SQL" in failure.event_specific_data.error.message
    materialized = {e.event_specific_data.materialization.asset_key.path[-1]
                    for e in result.get_asset_materialization_events()}
    assert materialized == {"raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model",
                            "baseline_model"}


def test_cli_run_new_and_dagster_materialize_over_sqlite_and_duckdb(project, shop_questions):
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home")}
    bin_dir = Path(sys.executable).parent
    bad = yaml.safe_load((project.configs / "run_config.yaml").read_text())
    bad["dataset"]["path"] = str(shop_questions.parent / "typo.jsonl")
    (project.root / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = subprocess.run([str(bin_dir / "fastdistill"), "run", "new", "typo-run", "--config", "bad.yaml"],
                             env=env, cwd=project.root, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == (f"fastdistill: error: dataset.path: questions file not found: "
                              f"{shop_questions.parent / 'typo.jsonl'}\n")
    assert not project.registry.exists("typo-run")  # nothing half-created
    no_gold = subprocess.run([str(bin_dir / "fastdistill"), "run", "new", "shop-run"], env=env, cwd=project.root,
                             capture_output=True, text=True)
    assert no_gold.returncode == 2 and no_gold.stderr == (
        "fastdistill: error: eval split 'test' has no questions with gold SQL: evaluation needs gold; label some, "
        "or set eval_split: null to distill without evaluating\n")
    project.edit_config("run_config", eval_split=None)  # generate data only
    created = subprocess.run([str(bin_dir / "fastdistill"), "run", "new", "shop-run"], env=env, cwd=project.root,
                             capture_output=True, text=True, check=True)
    assert created.stdout.startswith("created run shop-run")
    subprocess.run([str(bin_dir / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
                    "--select", "raw,canonical,teacher_candidates,filtered,distilled", "--partition", "shop-run",
                    *forkserver_steps()],
                   env=env, cwd=project.root, capture_output=True, text=True, check=True)
    store = ArtifactStore(project.artifacts)
    assert store.read("shop-run", "raw").filter(pl.col("reject_reason").is_not_null()).height == 3
    kept = store.read("shop-run", "distilled").frame
    assert kept.height > 0
    by_db = store.read("shop-run", "filtered").frame.filter(pl.col("kept")).group_by("dialect").len()
    assert dict(by_db.iter_rows()).keys() == {"sqlite", "duckdb"}
