import json
import multiprocessing as mp
import os
import signal
import time
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from benchmarks.storage_stress import run_stress
from fastdistill_assets.store.manifest import (
    ManifestBuilder,
    build_manifest,
    canonical_rows,
)
from fastdistill_assets.store.storage import (
    SUPERSEDED_MARKER,
    TMP_PREFIX,
    VERSIONS_DIR,
    ArtifactStore,
    ParquetIOManager,
    StageOutput,
    manifest_metadata,
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


def _rich_frame() -> pl.DataFrame:
    """Six rows, every cell of each column different from the next row's; all the dtype kinds."""
    utc = UTC
    return pl.DataFrame({
        "sample_id": ["s3", "s1", None, "s2", "s5", "s4"],
        "text": ['say "hi"\n', "", None, "a\\b", "ünï", "x" * 150],
        "n": [1, -2, None, 0, 2**62, 7],
        "x": [0.5, -0.0, None, float("nan"), 0.0, 1e300],
        "ok": [True, False, None, True, False, True],
        "day": [date(2024, 1, 2), None, date(1969, 12, 31), date(2024, 1, 3), date(2000, 2, 29), date(2024, 1, 2)],
        "at": [datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=utc), None, datetime(2024, 1, 2, tzinfo=utc),
               datetime(1970, 1, 1, tzinfo=utc), datetime(2030, 6, 7, tzinfo=utc), datetime(2024, 1, 2, 3, tzinfo=utc)],
        "blob": [b"\x00\xff", b"", None, b"a", b"\x00", b"\xff"],
        "tags": [["a", "b"], [], None, ["b", "a"], [None], ["a"]],
        "meta": [{"k": 1, "v": "a"}, {"k": None, "v": "a"}, None, {"k": 1, "v": "b"}, {"k": 2, "v": None},
                 {"k": 3, "v": "c"}],
        "cat": pl.Series(["u", "v", None, "v", "u", "w"], dtype=pl.Categorical),
    }, schema_overrides={"n": pl.Int64})


def _chunked(frame: pl.DataFrame, sizes: list[int]) -> dict:
    builder, start = ManifestBuilder(), 0
    for size in sizes:
        builder.update(frame.slice(start, size))
        start += size
    assert start == frame.height
    return builder.finish()


@pytest.mark.parametrize("frame", [_rich_frame(), _rich_frame().drop("sample_id"), _frame()],
                         ids=["rich", "no_sample_id", "small"])
@pytest.mark.parametrize("sizes", [[None], [0, None], [1, 0, None], [2, 0, 0, None], "ones", [None, 0]])
def test_chunked_manifest_equals_the_whole_frame_manifest(frame, sizes):
    if sizes == "ones":
        sizes = [1] * frame.height
    else:
        rest = frame.height - sum(s for s in sizes if s is not None)
        sizes = [rest if s is None else s for s in sizes]
    assert _chunked(frame, sizes) == build_manifest(frame)


def test_shards_merged_equal_the_whole_frame_manifest():
    frame = _rich_frame()
    first, second, empty = ManifestBuilder(), ManifestBuilder(), ManifestBuilder()
    first.update(frame.slice(4, 2))
    second.update(frame.slice(0, 4))
    first.merge(empty)
    first.merge(second)
    assert first.finish() == build_manifest(frame)
    empty.merge(first)
    assert empty.finish() == build_manifest(frame)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_order_does_not_change_the_content_hash(seed):
    frame = _rich_frame()
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    assert build_manifest(shuffled) == build_manifest(frame)
    assert build_manifest(frame.reverse()) == build_manifest(frame)


@pytest.mark.parametrize("column", _rich_frame().columns)
@pytest.mark.parametrize("to_null", [False, True])
def test_changing_one_cell_changes_the_content_hash(column, to_null):
    frame = _rich_frame()
    first_row = pl.int_range(pl.len()) == 0
    value = pl.lit(None, frame.schema[column]) if to_null else pl.col(column).shift(-1)  # row 1's value
    changed = frame.with_columns(pl.when(first_row).then(value).otherwise(pl.col(column)).alias(column))
    assert changed.row(0) != frame.row(0) and changed.slice(1).equals(frame.slice(1))
    assert build_manifest(changed)["content_hash"] != build_manifest(frame)["content_hash"]
    assert build_manifest(changed)["field_hash"] == build_manifest(frame)["field_hash"]


@pytest.mark.parametrize("pair", [
    ({"a": ["ab"], "b": ["c"]}, {"a": ["a"], "b": ["bc"]}),  # where one string ends and the next starts
    ({"a": [""]}, {"a": [None]}),
    ({"x": [0.0]}, {"x": [-0.0]}),
    ({"x": [float("nan")]}, {"x": [None]}),
    ({"a": ["1"], "b": [None]}, {"a": [None], "b": ["1"]}),
], ids=["boundary", "empty_vs_null", "signed_zero", "nan_vs_null", "null_position"])
def test_near_identical_rows_hash_differently(pair):
    left, right = (pl.DataFrame(data, schema_overrides={"b": pl.String} if "b" in data else None) for data in pair)
    assert build_manifest(left)["content_hash"] != build_manifest(right)["content_hash"]


def test_a_duplicate_row_changes_the_content_hash():
    frame = _rich_frame()
    assert build_manifest(pl.concat([frame, frame.head(1)]))["content_hash"] != build_manifest(frame)["content_hash"]
    assert build_manifest(pl.concat([frame, frame]))["content_hash"] != build_manifest(frame)["content_hash"]


@pytest.mark.parametrize(("second", "column"), [
    (_frame().with_columns(pl.col("n").cast(pl.Float64)), "1 'n'"),
    (_frame().rename({"n": "m"}), "1 'm'"),
    (_frame().select("n", "sample_id"), "0 'n'"),
    (_frame().with_columns(pl.lit(1).alias("extra")), "2 'extra'"),
    (_frame().drop("n"), "1 'n'"),
], ids=["dtype", "name", "order", "extra", "missing"])
def test_chunks_with_another_schema_are_refused(second, column):
    builder = ManifestBuilder()
    builder.update(_frame())
    with pytest.raises(ValueError, match=f"at column {column}:"):
        builder.update(second.head(0))
    other = ManifestBuilder()
    other.update(second)
    with pytest.raises(ValueError, match="schema differs"):
        builder.merge(other)


@pytest.mark.parametrize("frame", [pl.DataFrame(), _frame().head(0), _frame().drop("sample_id"),
                                   _rich_frame().drop("sample_id").head(0),
                                   pl.DataFrame({"sample_id": [None, None]}, schema={"sample_id": pl.String})],
                         ids=["no_columns", "empty", "no_sample_id", "empty_no_sample_id", "null_ids"])
def test_content_hash_is_always_present(frame):
    manifest = build_manifest(frame)
    assert len(manifest["content_hash"]) == 64 and manifest["count"] == frame.height
    if frame.height == 0 or "sample_id" not in frame.columns or frame["sample_id"].null_count() == frame.height:
        assert manifest["min_sample_id"] is None and manifest["max_sample_id"] is None
    assert ManifestBuilder().finish() == build_manifest(pl.DataFrame())


def test_empty_frames_with_different_schemas_hash_differently():
    hashes = {build_manifest(f)["content_hash"] for f in (pl.DataFrame(), _frame().head(0), _frame().drop("n").head(0))}
    assert len(hashes) == 3


def test_canonical_rows_and_content_hash_are_pinned():
    """The encoding is part of the manifest format: a change here changes every stored content_hash."""
    frame = pl.DataFrame({"sample_id": ["a", None], "n": [1, None], "x": [0.5, None], "ok": [True, None],
                          "d": [date(2024, 1, 2), None], "b": [b"\x00\xff", None], "tags": [["x", "y"], None],
                          "meta": [{"k": 1, "a": "q"}, None]})
    assert canonical_rows(frame).to_list() == [
        '1:a1:119:46026788191726469124:true5:197244:00ff9:["x","y"]15:{"a":"q","k":1}',
        "--------",
    ]
    assert build_manifest(frame)["content_hash"] == "a14efb35b436241c8534b9a12b2eade78151f7739d9c147955f4f9275a7acd5b"


def test_metadata_of_a_manifest_without_content_hash():
    manifest = {**build_manifest(_frame()), "version": "v1"}
    del manifest["content_hash"]  # written before content_hash was in every manifest
    assert manifest_metadata(manifest, _frame(), Path("/tmp/v1"))["content_hash"].text == ""


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
    assert metadata["field_hash"].text == build_manifest(_frame())["field_hash"]
    assert metadata["content_hash"].text == build_manifest(_frame())["content_hash"]
    assert json.loads((folder / "manifest.json").read_text())["content_hash"] == metadata["content_hash"].text
