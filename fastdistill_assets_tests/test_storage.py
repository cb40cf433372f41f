import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from benchmarks.storage_stress import run_stress
from fastdistill_assets.storage import (
    SUPERSEDED_MARKER,
    TMP_PREFIX,
    VERSIONS_DIR,
    ArtifactStore,
    ParquetIOManager,
    StageOutput,
    build_manifest,
)


def _frame():
    return pl.DataFrame({"sample_id": ["b", "a", "c"], "n": [1, 2, 3]})


def _versions(root: Path) -> set[Path]:
    """Everything in run1/raw/versions/ (versions, temp and trash folders)."""
    return set((root / "run1" / "raw" / VERSIONS_DIR).iterdir())


class _NeverReadyText:
    """Side-file content whose text never comes: ``str()`` sets ``reached``, then waits on ``release``."""

    def __init__(self, reached, release) -> None:
        self.reached, self.release = reached, release

    def __str__(self) -> str:
        self.reached.set()
        self.release.wait()
        return ""


def _write_blocked(root: Path, reached, release) -> None:
    """A writer process that stops mid-write (data.parquet written, its side file never done)."""
    ArtifactStore(root).write("run1", "raw", StageOutput(_frame().head(1), {"note.txt": _NeverReadyText(reached, release)}))


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
    assert folder == tmp_path / "run1" / "canonical" / VERSIONS_DIR / manifest["version"]
    assert store.current_dir("run1", "canonical") == folder
    assert json.loads((folder / "manifest.json").read_text())["count"] == 3
    loaded = store.read("run1", "canonical")
    assert isinstance(loaded, pl.DataFrame) and loaded.equals(_frame())


def test_stage_output_round_trip_with_side_files(tmp_path):
    store = ArtifactStore(tmp_path)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.json").write_text("{}")
    folder, _ = store.write("run1", "student_model", StageOutput(_frame(), {"report.json": b"{}", "model": model_dir}))
    loaded = store.read("run1", "student_model")
    assert isinstance(loaded, StageOutput)
    assert loaded.files["report.json"].read_bytes() == b"{}"
    assert loaded.files["model"] == folder / "model" and (loaded.files["model"] / "weights.json").exists()
    assert not model_dir.exists()


def test_rewrite_publishes_a_new_version_and_keeps_the_old_one_readable(tmp_path):
    store = ArtifactStore(tmp_path)
    first, _ = store.write("run1", "raw", _frame())
    second, _ = store.write("run1", "raw", _frame().head(1))
    assert store.read("run1", "raw").height == 1
    assert first.name < second.name
    assert pl.read_parquet(first / "data.parquet").equals(_frame())  # superseded, within the grace period
    assert sorted(p.name for p in (tmp_path / "run1").iterdir()) == ["raw"]
    assert sorted(p.name for p in (tmp_path / "run1" / "raw").iterdir()) == [".lock", "CURRENT", VERSIONS_DIR]
    assert _versions(tmp_path) == {first, second}


def test_missing_stage_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not been materialized"):
        ArtifactStore(tmp_path).read("run1", "raw")


def test_previous_layout_is_read_until_a_version_is_published(tmp_path):
    folder = tmp_path / "run1" / "raw"
    folder.mkdir(parents=True)
    _frame().write_parquet(folder / "data.parquet")
    (folder / "report.json").write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({**build_manifest(_frame()), "files": ["report.json"],
                                                      "bundle": True}))
    store = ArtifactStore(tmp_path)
    loaded = store.read("run1", "raw")
    assert isinstance(loaded, StageOutput) and loaded.frame.equals(_frame())
    assert loaded.files == {"report.json": folder / "report.json"}
    store.write("run1", "raw", _frame().head(1))
    assert store.read("run1", "raw").height == 1


def test_cleanup_removes_versions_superseded_longer_than_the_grace_and_never_the_current(tmp_path):
    store = ArtifactStore(tmp_path, grace_s=60)
    v1, v2, v3 = (store.write("run1", "raw", _frame().head(n))[0] for n in (1, 2, 3))
    assert _versions(tmp_path) == {v1, v2, v3}
    assert (v1 / SUPERSEDED_MARKER).exists() and (v2 / SUPERSEDED_MARKER).exists()
    assert not (v3 / SUPERSEDED_MARKER).exists()
    two_minutes_ago = time.time() - 120
    os.utime(v1 / SUPERSEDED_MARKER, (two_minutes_ago, two_minutes_ago))
    store.cleanup("run1", "raw")
    assert _versions(tmp_path) == {v2, v3}
    assert pl.read_parquet(v2 / "data.parquet").height == 2
    ArtifactStore(tmp_path, grace_s=0).cleanup("run1", "raw")
    assert _versions(tmp_path) == {v3}
    assert store.read("run1", "raw").height == 3


def test_read_resolves_again_when_the_version_it_resolved_is_deleted(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path, grace_s=0)
    stale, _ = store.write("run1", "raw", _frame())
    store.write("run1", "raw", _frame().head(1))
    assert not stale.exists()
    stale_first = iter([stale])  # as if CURRENT was resolved just before the next write and its cleanup
    resolve = ArtifactStore.current_dir
    monkeypatch.setattr(ArtifactStore, "current_dir", lambda self, *key: next(stale_first, None) or resolve(self, *key))
    assert store.read("run1", "raw").height == 1


def test_failed_write_leaves_the_previous_version_and_no_temp_folder(tmp_path):
    store = ArtifactStore(tmp_path)
    first, _ = store.write("run1", "raw", _frame())
    with pytest.raises(FileNotFoundError):
        store.write("run1", "raw", StageOutput(_frame().head(1), {"model": tmp_path / "missing"}))
    assert _versions(tmp_path) == {first}
    assert store.read("run1", "raw").equals(_frame())


def test_killed_writer_leaves_the_previous_version_and_the_next_write_cleans_up(tmp_path):
    store = ArtifactStore(tmp_path)
    first, _ = store.write("run1", "raw", _frame())
    ctx = mp.get_context("spawn")
    reached, release = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_write_blocked, args=(tmp_path, reached, release))
    writer.start()
    try:
        assert reached.wait(timeout=120), "the writer never reached its side file"
        temp = [p for p in _versions(tmp_path) if p.name.startswith(TMP_PREFIX)]
        assert len(temp) == 1 and (temp[0] / "data.parquet").exists()
        ArtifactStore(tmp_path, grace_s=0).cleanup("run1", "raw")
        assert _versions(tmp_path) == {first, *temp}  # a live writer's folder is left alone
        assert store.read("run1", "raw").equals(_frame())
    finally:
        writer.kill()
        writer.join()
    assert writer.exitcode == -signal.SIGKILL
    assert store.read("run1", "raw").equals(_frame())
    assert _versions(tmp_path) == {first, *temp}
    second, _ = store.write("run1", "raw", _frame().head(2))
    assert _versions(tmp_path) == {first, second}
    assert store.read("run1", "raw").equals(_frame().head(2))


def test_two_writer_processes_and_a_reader_never_fail_and_leave_nothing_behind(tmp_path):
    result = run_stress(tmp_path, writers=2, seconds=3.0, grace_s=1.0)
    assert result.writes >= 20 and result.reads >= 20
    assert (result.failed_writes, result.failed_reads, result.corrupt_reads) == (0, 0, 0), result.errors
    assert result.leftovers == []


def test_io_manager_metadata_points_at_the_published_version(tmp_path):
    @dg.asset
    def numbers() -> pl.DataFrame:
        return _frame()

    result = dg.materialize([numbers], resources={"io_manager": ParquetIOManager(root=str(tmp_path))})
    metadata = result.asset_materializations_for_node("numbers")[0].metadata
    folder = ArtifactStore(tmp_path).current_dir("_unpartitioned", "numbers")
    assert metadata["path"].path == str(folder)
    assert metadata["version"].text == folder.name
