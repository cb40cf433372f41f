"""Large runs: stages stream in chunks, and shards are Dagster steps with the same result.

The sharded run goes through the documented `dagster asset materialize` (multiprocess
executor: one process per step), the unsharded one through an in-process `dg.materialize`.
"""

import os
import subprocess

import dagster as dg
import polars as pl
import pytest

from fastdistill_assets.defs.assets.sharding import stage_span_s
from fastdistill_assets.store.chunks import ChunkSpool, rechunk, run_chunks
from fastdistill_assets_tests.conftest import (
    BIN,
    GREEDY_DECODE,
    SHARD_TEST_STAGES,
    assert_shards_equal_whole,
    forkserver_steps,
    teacher_gateway,
    whole_run_then_four_shards,
)


def test_four_shards_in_their_own_processes_equal_one_in_process_run(project):
    """Same sample_ids, same verdicts, the same distilled rows (content_hash), with every
    row-wise stage split into 4 shard steps by the multiprocess executor."""
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home")}
    whole_run_then_four_shards(project, env)
    done = subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
                           "--select", SHARD_TEST_STAGES, "--partition", "sharded", *forkserver_steps()],
                          env=env, cwd=project.root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        steps = assert_shards_equal_whole(project, instance)
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "sharded"}))
        pids = {r.event_log_entry.dagster_event.pid for r in instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_START).records}
    assert len(pids) == len(steps)  # each step in a process of its own


@pytest.mark.parametrize("rows, key, expected", [
    (2, None, [["a", "a"], ["b", "b"], ["b", "c"], ["c", "d"], ["d", "e"]]),
    (2, "k", [["a", "a"], ["b", "b", "b"], ["c", "c"], ["d", "d"], ["e"]]),
    (100, "k", [["a", "a", "b", "b", "b", "c", "c", "d", "d", "e"]]),
])
def test_rechunk_keeps_samples_whole(rows, key, expected):
    frames = [pl.DataFrame({"k": ["a", "a", "b", "b", "b", "c"]}), pl.DataFrame({"k": ["c", "d", "d", "e"]})]
    assert [c["k"].to_list() for c in rechunk(frames, rows, key)] == expected


def test_rechunk_of_nothing_is_one_empty_chunk_with_the_schema():
    [chunk] = rechunk([pl.DataFrame(schema={"k": pl.String})], 3, "k")
    assert chunk.height == 0 and chunk.schema == pl.Schema({"k": pl.String})


def test_a_spool_resumes_where_it_stopped_and_never_reuses_other_inputs(tmp_path):
    chunks = [pl.DataFrame({"n": [i, i]}) for i in range(5)]
    made: list[int] = []

    def work(index, chunk):
        if index == 3 and not made.count(3):
            made.append(3)
            raise KeyboardInterrupt  # killed in chunk 3
        made.append(index)
        return chunk.with_columns(pl.col("n") * 10), {"started": 0.0, "ended": float(index)}

    spool = ChunkSpool(tmp_path / "stage", "fingerprint-1")
    with pytest.raises(KeyboardInterrupt):
        run_chunks(spool, chunks, work)
    assert made == [0, 1, 2, 3]
    assert run_chunks(ChunkSpool(tmp_path / "stage", "fingerprint-1"), chunks, work) == 5
    assert made == [0, 1, 2, 3, 3, 4]  # only the unfinished chunks were made again
    assert pl.concat([pl.read_parquet(p) for p in spool.parts(5)])["n"].to_list() == [0, 0, 10, 10, 20, 20, 30, 30,
                                                                                    40, 40]
    assert stage_span_s(spool, 5) == 4.0
    assert not list(spool.folder.glob(".tmp-*"))
    other = ChunkSpool(tmp_path / "stage", "fingerprint-2")  # another input's shard: never deletes
    assert not other.done(0) and spool.done(0)
    ChunkSpool(tmp_path / "stage", "fingerprint-2", prune=True)  # the merge, under the writer lock: prunes
    assert not spool.folder.exists() and other.folder.exists()
    other.clear()
    assert not (tmp_path / "stage").exists()


def test_the_in_process_teacher_answers_as_its_server_does(project):
    """`in_process: true`: the same answers, token counts and cache identity as the embedded
    teacher's HTTP server, without a server (for the million-sample benchmark)."""
    from fastdistill_assets.config.models import DecodeProfile
    from fastdistill_assets_tests.teacher_helpers import make_requests

    requests = make_requests(12)
    answers = {}
    for in_process in (False, True):
        project.edit_config("provider_gateway", providers={"embedded": {"in_process": in_process}})
        (project.artifacts / "_cache" / "responses.sqlite").unlink(missing_ok=True)  # both ask the teacher
        gateway = teacher_gateway(project)
        results, endpoint, calls = gateway.generate(requests, "embedded", None, DecodeProfile(**GREEDY_DECODE))
        answers[in_process] = [(r.content, r.prompt_tokens, r.completion_tokens, r.error) for r in results]
        assert calls == 12 and endpoint.cache_identity == "local:embedded"
        assert endpoint.base_url.startswith("http://in-process/" if in_process else "http://127.0.0.1:")
    assert answers[True] == answers[False] and all(error is None for *_, error in answers[True])


@pytest.mark.parametrize("judge", [False, True])
def test_a_stage_s_parts_are_not_reused_once_the_default_model_changes(project, judge):
    """A null `teacher.model` (or `judge.model`) reaches the gateway's default, which lives
    outside the run config: changing it must change the fingerprint of the parts a killed stage
    left, or a resume would mix two models' answers in one stage."""
    from types import SimpleNamespace

    from fastdistill_assets.defs.assets.gates import GATES_STAGE
    from fastdistill_assets.defs.assets.sharding import StageStep
    from fastdistill_assets.defs.assets.teacher import TEACHER_STAGE
    from fastdistill_assets.store.chunks import spool_fingerprint

    if judge:
        project.edit_config("quality_gates", judge={"enabled": True})
    frozen = project.new_run("r1")
    assert frozen.config.teacher.model is None and frozen.config.teacher.provider == "embedded"
    upstream = SimpleNamespace(manifest={"content_hash": "abc"})
    stage = GATES_STAGE if judge else TEACHER_STAGE

    def fingerprint() -> str:
        step = StageStep(context=None, frozen=frozen, run_config=None, teacher=teacher_gateway(project))
        return spool_fingerprint(**stage.depends_on(step, upstream))

    before = fingerprint()
    assert fingerprint() == before
    project.edit_config("provider_gateway", providers={"embedded": {"model": "another-linker"}})
    assert fingerprint() != before


def test_the_first_row_of_each_sample_is_kept_across_parts_and_a_repeat_changes_nothing(tmp_path):
    """Parts canonicalized apart (by shards) still hold each sample_id once, at its first place,
    and repeating the pass (a merge re-run after a kill) keeps the same rows."""
    from fastdistill_assets.datasets.canonical import keep_first_across_parts

    spool = ChunkSpool(tmp_path / "canonical", "f1")
    parts = [["a", "b"], ["c", "a", "d"], ["b", "d"], ["e"]]
    for index, ids in enumerate(parts):
        spool.write(index, pl.DataFrame({"sample_id": ids, "n": [index] * len(ids)}), {"good": len(ids)})
    for _ in range(2):
        assert keep_first_across_parts(spool, len(parts)) == [2, 2, 0, 1]
        kept = pl.concat([pl.read_parquet(p) for p in spool.parts(len(parts))])
        assert kept.rows() == [("a", 0), ("b", 0), ("c", 1), ("d", 1), ("e", 3)]
        assert [spool.summary(i) for i in range(len(parts))] == [{"good": len(ids)} for ids in parts]


def test_a_shard_keeps_writing_when_another_run_s_publish_clears_its_spool(tmp_path):
    """Another materialization of the run_id publishes the stage and clears the spool while this
    shard works: the shard's next part goes into the folder made anew, and the missing earlier
    ones are left for this run's merge to make."""
    spool = ChunkSpool(tmp_path / "teacher_candidates", "same-fingerprint")
    spool.write(0, pl.DataFrame({"x": [1]}), {"n": 1})
    ChunkSpool(tmp_path / "teacher_candidates", "same-fingerprint").clear()   # the other run's publish
    spool.write(1, pl.DataFrame({"x": [2]}), {"n": 1})
    assert not spool.done(0) and spool.done(1)
    assert pl.read_parquet(spool.part(1))["x"].to_list() == [2]
