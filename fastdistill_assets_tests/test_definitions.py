import dagster as dg

EXPECTED_ASSETS = {"raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model", "eval_report"}


def test_definitions_load():
    from fastdistill_assets.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.path[-1] for k in repo.asset_graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    for key in repo.asset_graph.get_all_asset_keys():
        assert repo.asset_graph.get(key).partitions_def.name == "run_id"
    assert isinstance(defs, dg.Definitions)
    check_names = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"exec_pass_rate", "p_keep", "test_exec_accuracy_vs_baseline", "online_win_rate"} <= check_names
    assert [s.name for s in defs.sensors] == ["failed_check_alerts"]
    assert set(defs.resources) == {"io_manager", "run_config", "teacher", "alerts"}
