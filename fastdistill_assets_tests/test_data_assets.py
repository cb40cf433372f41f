from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import materialize
from fastdistill_assets_tests.wikisql_fixture import GOOD, write_wikisql


def _metadata(result, asset_name):
    [event] = [e for e in result.get_asset_materialization_events()
               if e.event_specific_data.materialization.asset_key.path[-1] == asset_name]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def test_raw_to_canonical_on_a_wikisql_fixture(project):
    duplicate = {**GOOD, "question": "How many  goals did Ana Silva score? "}  # same after normalization
    folder = write_wikisql(project.root / "wikisql", "train", [GOOD, duplicate, {"table_id": "x"}])
    project.edit_config("run_config", dataset={"kind": "wikisql", "path": str(folder), "splits": ["train"]})
    project.new_run("r1")
    result = materialize(project, [raw, canonical], "r1")
    assert result.success

    store = ArtifactStore(project.artifacts)
    raw_frame, canon = store.read("r1", "raw"), store.read("r1", "canonical")
    assert raw_frame.height == 3 and canon.height == 1
    raw_meta, canon_meta = _metadata(result, "raw"), _metadata(result, "canonical")
    assert raw_meta["rejected"] == 1 and raw_meta["reject_reason_counts"] == {"missing_field:question": 1}
    assert canon_meta["duplicates_dropped"] == 1
    assert canon_meta["count"] == 1 and canon_meta["min_sample_id"] == canon["sample_id"][0]
    assert {"timing_wall_s", "field_hash", "columns"} <= canon_meta.keys()
    assert (ArtifactStore(project.artifacts).current_dir("r1", "canonical") / "manifest.json").exists()


def test_same_input_same_ids_in_every_run(project):
    project.edit_config("run_config", dataset={"limit_per_split": 50})
    for run_id in ("a", "b"):
        project.new_run(run_id)
        assert materialize(project, [raw, canonical], run_id).success
    store = ArtifactStore(project.artifacts)
    ids_a, ids_b = (store.read(r, "canonical")["sample_id"] for r in ("a", "b"))
    assert ids_a.len() == 150 and ids_a.equals(ids_b)


def test_decode_profile_changes_sample_ids(project):
    project.edit_config("run_config", dataset={"limit_per_split": 20, "splits": ["train"]})
    project.new_run("greedy")
    project.edit_config("run_config", decode={"temperature": 0.7, "num_generations": 4})
    project.new_run("sampled")
    for run_id in ("greedy", "sampled"):
        assert materialize(project, [raw, canonical], run_id).success
    store = ArtifactStore(project.artifacts)
    greedy, sampled = (set(store.read(r, "canonical")["sample_id"]) for r in ("greedy", "sampled"))
    assert len(greedy) == 20 and not greedy & sampled


def test_changed_gate_config_is_refused(project):
    project.edit_config("run_config", dataset={"limit_per_split": 5})
    project.new_run("r1")
    project.edit_config("quality_gates", execution={"timeout_ms": 999})
    result = materialize(project, [raw], "r1", raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "needs a new run" in failure.event_specific_data.error_display_string


def test_partition_added_in_the_ui_freezes_current_config(project):
    project.edit_config("run_config", dataset={"limit_per_split": 5, "splits": ["test"]}, teacher={"splits": ["test"]})
    project.instance.add_dynamic_partitions("run_id", ["from-ui"])
    assert materialize(project, [raw], "from-ui").success
    assert project.registry.load("from-ui").config.dataset.splits == ["test"]
    assert ArtifactStore(project.artifacts).read("from-ui", "raw").get_column("split").unique().to_list() == ["test"]
