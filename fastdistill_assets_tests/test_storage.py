import json

import polars as pl
import pytest

from fastdistill_assets.storage import ArtifactStore, StageOutput, build_manifest


def _frame():
    return pl.DataFrame({"sample_id": ["b", "a", "c"], "n": [1, 2, 3]})


def test_manifest_fields():
    manifest = build_manifest(_frame())
    assert manifest["count"] == 3
    assert manifest["min_sample_id"] == "a" and manifest["max_sample_id"] == "c"
    assert manifest["columns"] == ["sample_id", "n"]
    assert manifest["field_hash"] == build_manifest(_frame().with_columns(pl.col("n") * 2))["field_hash"]
    assert manifest["field_hash"] != build_manifest(_frame().with_columns(pl.col("n").cast(pl.Float64)))["field_hash"]


def test_frame_round_trip_with_manifest_on_disk(tmp_path):
    store = ArtifactStore(tmp_path)
    folder, manifest = store.write("run1", "canonical", _frame())
    assert folder == tmp_path / "run1" / "canonical"
    assert json.loads((folder / "manifest.json").read_text())["count"] == 3
    loaded = store.read("run1", "canonical")
    assert isinstance(loaded, pl.DataFrame) and loaded.equals(_frame())


def test_stage_output_round_trip_with_side_files(tmp_path):
    store = ArtifactStore(tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.json").write_text("{}")
    store.write("run1", "student_model", StageOutput(_frame(), {"report.json": b"{}", "model": model_dir}))
    loaded = store.read("run1", "student_model")
    assert isinstance(loaded, StageOutput)
    assert loaded.files["report.json"].read_bytes() == b"{}"
    assert (loaded.files["model"] / "weights.json").exists()


def test_rewrite_replaces_stage_atomically(tmp_path):
    store = ArtifactStore(tmp_path)
    store.write("run1", "raw", _frame())
    store.write("run1", "raw", _frame().head(1))
    assert store.read("run1", "raw").height == 1
    assert sorted(p.name for p in (tmp_path / "run1").iterdir()) == ["raw"]


def test_missing_stage_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not been materialized"):
        ArtifactStore(tmp_path).read("run1", "raw")
