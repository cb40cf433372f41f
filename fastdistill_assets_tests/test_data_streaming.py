"""raw and canonical stream in chunks: the same stage whatever the chunk size, resumable after a kill."""

import json

import polars as pl
import pytest

import fastdistill_assets.defs.assets.data as data_assets
from fastdistill_assets.config.models import DatasetConfig
from fastdistill_assets.core.processes import WorkerPool
from fastdistill_assets.datasets.load import DatasetStream, load_dataset
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import materialize
from fastdistill_assets_tests.wikisql_fixture import GOOD, write_wikisql

UNSTABLE = {"timing_wall_s", "timing_rows_per_s", "version", "path", "parts_resumed", "chunks"}  # differ run to run


def _metadata(result, asset_name, stable=True):
    [event] = [e for e in result.get_asset_materialization_events()
               if e.event_specific_data.materialization.asset_key.path[-1] == asset_name]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()
            if not stable or k not in UNSTABLE}


def _question(sel, agg, conds, question):
    return {"phase": 1, "table_id": "1-100-1", "question": question, "sql": {"sel": sel, "agg": agg, "conds": conds}}


def _mixed_questions():
    """Good rows, duplicates far apart (after normalization), rejects of several kinds, and gold
    with an empty result: 25 lines."""
    rows = []
    for i in range(5):
        rows += [
            _question(2, 0, [[0, 0, "Ana Silva"]], f"How many goals did player {i} score?"),
            _question(0, 0, [[1, 0, "Porto"]], f"Who plays for Porto, take {i}?"),
            _question(0, 0, [[1, 0, "Nowhere"]], f"Who plays for Nowhere, take {i}?"),   # empty result
            {"table_id": "x"} if i % 2 else "{not json",
            _question(2, 0, [[0, 0, "Ana Silva"]], f"How many  goals did player {(i + 2) % 5} score? "),  # a duplicate
        ]
    return rows


def _dataset(project, kind):
    if kind == "demo":
        return {"kind": "demo", "limit_per_split": 20, "withhold_gold": {"share": 0.3, "splits": ["train"]}}
    folder = write_wikisql(project.root / "wikisql", "train", _mixed_questions())
    write_wikisql(folder, "dev", [GOOD, *_mixed_questions()[:9]])
    return {"kind": "wikisql", "path": str(folder), "splits": ["train", "dev"], "gold_empty_result": "reject"}


def _manifest(store, run_id, stage):
    return json.loads((store.current_dir(run_id, stage) / "manifest.json").read_text())


@pytest.mark.parametrize("kind", ["demo", "wikisql"])
@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_small_chunks_give_the_stage_one_chunk_gives(project, kind, chunk_rows):
    project.edit_config("run_config", dataset=_dataset(project, kind), scale={"chunk_rows": 100_000})
    project.new_run("whole")
    project.edit_config("run_config", scale={"chunk_rows": chunk_rows})
    project.new_run("chunked")
    results = {run_id: materialize(project, [raw, canonical], run_id) for run_id in ("whole", "chunked")}
    store = ArtifactStore(project.artifacts)
    for stage in ("raw", "canonical"):
        whole, chunked = store.read("whole", stage), store.read("chunked", stage)
        assert chunked.equals(whole)                      # same rows in the same order
        assert whole.height > 0
        assert _manifest(store, "chunked", stage)["content_hash"] == _manifest(store, "whole", stage)["content_hash"]
        assert _metadata(results["chunked"], stage) == _metadata(results["whole"], stage)
    # one row group per part: the chunking really happened
    assert ArtifactStore(project.artifacts).scan("chunked", "raw").count == store.read("chunked", "raw").height
    raw_groups = sum(1 for _ in store.scan("chunked", "raw").row_groups())
    assert raw_groups >= store.read("chunked", "raw").height // chunk_rows
    # the metadata is the whole-frame figures
    frame = store.read("chunked", "raw")
    meta = _metadata(results["chunked"], "raw")
    rejected = frame.filter(pl.col("reject_reason").is_not_null())
    assert meta["rejected"] == rejected.height
    reasons = rejected.group_by("reject_reason").len().sort("reject_reason")
    assert meta["reject_reason_counts"] == dict(reasons.iter_rows())
    assert meta["split_counts"] == dict(frame.group_by("split").len().iter_rows())
    assert meta["labeled"] == frame.filter(pl.col("reject_reason").is_null() & pl.col("gold_sql").is_not_null()).height
    assert meta["gold_free"] == frame.filter(pl.col("reject_reason").is_null() & pl.col("gold_sql").is_null()).height
    canon_meta, canon = _metadata(results["chunked"], "canonical"), store.read("chunked", "canonical")
    assert canon_meta["duplicates_dropped"] == frame.height - rejected.height - canon.height
    assert canon["sample_id"].n_unique() == canon.height
    if kind == "wikisql":   # the fixture's rejects, empty gold and cross-chunk duplicates are all there
        assert meta["gold_empty_result"] == 7 and meta["reject_reason_counts"]["gold_empty_result"] == 7
        assert set(meta["reject_reason_counts"]) == {"gold_empty_result", "malformed_json", "missing_field:question"}
        assert canon_meta["duplicates_dropped"] == 10
        assert meta["lower_values"] == {"train": "false (detected)", "dev": "false (detected)"}
    else:
        assert meta["gold_free"] > 0     # withhold_gold applied per batch


def _stopping_stream(loaded, stop_after=None):
    """DatasetStream whose batches are recorded (index of each batch loaded, not skipped), and which
    dies after ``stop_after`` loaded batches as a killed step would."""

    class Stream(DatasetStream):
        def batches(self, skip=lambda index: False):
            for batch in super().batches(skip):
                if batch.frame is not None:
                    if stop_after is not None and len(loaded) >= stop_after:
                        raise RuntimeError("killed mid-stage")
                    loaded.append(batch.index)
                yield batch

    return Stream


def _parts(project, run_id, stage):
    spool = project.artifacts / run_id / "_work" / stage
    return {p.name: p.stat().st_mtime_ns for p in spool.glob("*/part-*.parquet")}


def test_a_raw_step_killed_mid_stage_resumes_with_the_parts_it_finished(project, monkeypatch):
    project.edit_config("run_config", dataset={"limit_per_split": 20}, scale={"chunk_rows": 7})
    project.new_run("ref")
    project.new_run("r1")
    assert materialize(project, [raw, canonical], "ref").success

    first: list[int] = []
    monkeypatch.setattr(data_assets, "DatasetStream", _stopping_stream(first, stop_after=4))
    assert not materialize(project, [raw], "r1", raise_on_error=False).success
    finished = _parts(project, "r1", "raw")
    assert first == [0, 1, 2, 3] and len(finished) == 4
    [spool] = (project.artifacts / "r1" / "_work" / "raw").iterdir()
    (spool / ".tmp-1-part-000004.parquet").write_bytes(b"half a part")   # what a SIGKILL mid-write leaves

    second: list[int] = []
    monkeypatch.setattr(data_assets, "DatasetStream", _stopping_stream(second))
    spy = []
    original_write = data_assets.ChunkSpool.write

    def write(self, index, frame, summary=None):
        spy.append((index, dict(_parts(project, "r1", "raw"))))
        return original_write(self, index, frame, summary)

    monkeypatch.setattr(data_assets.ChunkSpool, "write", write)
    result = materialize(project, [raw, canonical], "r1")
    assert second == [4, 5, 6, 7, 8]                     # 60 questions in 9 parts: only the rest was loaded
    assert [index for index, _ in spy[:5]] == [4, 5, 6, 7, 8]
    last_seen = spy[4][1]
    assert {name: last_seen[name] for name in finished} == finished   # the finished parts were not rewritten
    assert _metadata(result, "raw", stable=False)["parts_resumed"] == 4
    store = ArtifactStore(project.artifacts)
    resumed, reference = store.read("r1", "raw"), store.read("ref", "raw")
    assert resumed.equals(reference) and resumed["source_id"].n_unique() == resumed.height == 60
    assert store.read("r1", "canonical").equals(store.read("ref", "canonical"))
    assert _manifest(store, "r1", "raw")["content_hash"] == _manifest(store, "ref", "raw")["content_hash"]
    assert not (project.artifacts / "r1" / "_work" / "raw").exists()    # the spool is gone once published


def test_a_canonical_step_killed_mid_stage_keeps_first_rows_across_the_resume(project, monkeypatch):
    project.edit_config("run_config", dataset=_dataset(project, "wikisql"), scale={"chunk_rows": 4})
    project.new_run("ref")
    project.new_run("r1")
    reference = materialize(project, [raw, canonical], "ref")
    assert materialize(project, [raw], "r1").success

    original, calls, die_on = data_assets.canonicalize, [], [3]

    def counted(chunk, config, seen=None):
        calls.append(chunk.height)
        if len(calls) in die_on:
            raise RuntimeError("killed mid-stage")
        return original(chunk, config, seen)

    monkeypatch.setattr(data_assets, "canonicalize", counted)
    assert not materialize(project, [raw, canonical], "r1", selection=[canonical], raise_on_error=False).success
    assert len(_parts(project, "r1", "canonical")) == 2
    calls.clear()
    die_on.clear()
    result = materialize(project, [raw, canonical], "r1", selection=[canonical])
    store = ArtifactStore(project.artifacts)
    groups = sum(1 for _ in store.scan("r1", "raw").row_groups())
    assert groups == 10 and len(calls) == groups - 2        # the two finished parts were not canonicalized again
    assert _metadata(result, "canonical", stable=False)["parts_resumed"] == 2
    assert store.read("r1", "canonical").equals(store.read("ref", "canonical"))
    # rows of later parts duplicating rows of the resumed parts were dropped, as in one go
    assert _metadata(result, "canonical")["duplicates_dropped"] == 10
    assert _metadata(result, "canonical") == _metadata(reference, "canonical")


@pytest.mark.parametrize("chunk_rows", [1, 7, 500])
def test_wikisql_batches_hold_at_most_chunk_rows_and_equal_the_whole_split(demo_dataset, tmp_path, chunk_rows):
    config = DatasetConfig(kind="wikisql", path=str(demo_dataset), splits=["dev"])
    whole = load_dataset(config, tmp_path)
    stream = DatasetStream(config, tmp_path, chunk_rows=chunk_rows, workers=1)
    batches = [b.frame for b in stream.batches()]
    assert all(0 < batch.height <= chunk_rows for batch in batches)
    assert [b.height for b in batches[:-1]] == [chunk_rows] * (len(batches) - 1)
    assert pl.concat(batches).equals(whole.frame) and whole.frame.height == 312
    assert stream.facts["lower_values"] == {"dev": "false (detected)"} == whole.facts["lower_values"]


def test_wikisql_batches_read_the_questions_file_lazily(tmp_path):
    """The first batch is loaded before the rest of the file is read: a line appended after it
    still arrives, so the split is never read whole."""
    folder = write_wikisql(tmp_path, "train", [GOOD] * 3)
    batches = DatasetStream(DatasetConfig(kind="wikisql", path=str(folder), splits=["train"]), tmp_path,
                            chunk_rows=2, workers=1).batches()
    assert next(batches).frame.height == 2
    with (folder / "train.jsonl").open("a") as handle:
        handle.write(json.dumps(GOOD) + "\n")
    assert [b.frame.height for b in batches] == [2]


def test_gold_validation_in_worker_processes_gives_the_same_records(demo_dataset, tmp_path, monkeypatch):
    config = DatasetConfig(kind="wikisql", path=str(demo_dataset), splits=["train", "dev"])
    serial = load_dataset(config, tmp_path).frame
    pooled = []
    executor = WorkerPool.executor

    def recorded(self, rows):
        pooled.append((rows, executor(self, rows) is not None))
        return executor(self, rows)

    monkeypatch.setattr(WorkerPool, "executor", recorded)
    stream = DatasetStream(config, tmp_path, chunk_rows=3_000, workers=2)
    frames = [b.frame for b in stream.batches()]
    assert pooled == [(2_244, True), (312, False)]     # the train split is one batch large enough for 2 workers
    assert pl.concat(frames).equals(serial)
