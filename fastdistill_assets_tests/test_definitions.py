import subprocess
import sys
import warnings

import dagster as dg
import pytest

from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.config.models import GatesConfig
from fastdistill_assets_tests.conftest import (
    REPO_CONFIGS,
    materialize,
    project_resources,
    teacher_gateway,
)

EXPECTED_ASSETS = {"raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model", "baseline_model",
                   "eval_report"}


def test_definitions_load():
    from fastdistill_assets.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.path[-1] for k in repo.asset_graph.get_all_asset_keys()}
    assert EXPECTED_ASSETS <= keys
    for key in repo.asset_graph.get_all_asset_keys():
        assert repo.asset_graph.get(key).partitions_def.name == "run_id"
    assert isinstance(defs, dg.Definitions)
    check_names = {k.name for k in repo.asset_graph.asset_check_keys}
    shipped = load_gates(REPO_CONFIGS / "quality_gates.yaml")
    assert check_names == {*shipped.checks, "distilled_not_empty", "test_exec_accuracy_vs_baseline", "online_win_rate"}
    assert [s.name for s in defs.sensors] == ["failed_check_alerts", "failed_run_alerts"]
    for key in repo.asset_graph.get_all_asset_keys():  # the UI renders markdown: no RST double backticks
        description = repo.asset_graph.get(key).description or ""
        assert description and "``" not in description, key
    assert set(defs.resources) == {"io_manager", "step_io", "run_config", "teacher", "alerts"}


def _specs(checks: list[dg.AssetChecksDefinition]) -> dict[str, dg.AssetCheckSpec]:
    return {spec.name: spec for check in checks for spec in check.check_specs}


def test_shipped_gate_checks_are_the_configured_entries_with_their_blocking_flags():
    from fastdistill_assets.defs.checks import build_gate_checks, build_hard_gate_checks

    shipped = load_gates(REPO_CONFIGS / "quality_gates.yaml")
    gate_checks, hard_gate_checks = build_gate_checks(shipped), build_hard_gate_checks(shipped)
    specs = _specs(gate_checks)
    assert {name: spec.blocking for name, spec in specs.items()} == \
        {name: entry.blocking for name, entry in shipped.checks.items()}
    assert {spec.asset_key.path[-1] for spec in specs.values()} == {"filtered"}
    assert not specs["gold_match_rate"].blocking and specs["exec_pass_rate"].blocking  # both kinds shipped
    assert "judge_mean" not in specs  # no threshold configured: not a check
    assert specs["rule_pass_rate"].description.startswith("quality gate rule_pass_rate >= 0.95 (warning")
    assert {name: spec.blocking for name, spec in _specs(hard_gate_checks).items()} == \
        {"test_exec_accuracy_vs_baseline": shipped.eval.blocking, "online_win_rate": shipped.eval.blocking}


def test_checks_follow_a_given_gate_config():
    from fastdistill_assets.defs.checks import build_asset_checks

    gates = GatesConfig.model_validate({
        "checks": {"exec_min": {"metric": "exec_pass_rate", "op": ">=", "value": 0.5, "blocking": False},
                   "exec_max": {"metric": "exec_pass_rate", "op": "<=", "value": 0.99, "blocking": True}},
        "eval": {"blocking": False}})
    specs = _specs(build_asset_checks(gates))
    assert {name: spec.blocking for name, spec in specs.items()} == {
        "exec_min": False, "exec_max": True, "distilled_not_empty": True,
        "test_exec_accuracy_vs_baseline": False, "online_win_rate": False}
    assert specs["exec_max"].description.startswith("quality gate exec_pass_rate <= 0.99 (blocking)")


TWO_ENTRIES = {"exec_min": {"metric": "exec_pass_rate", "op": ">=", "value": 0.5, "blocking": False},
               "exec_max": {"metric": "exec_pass_rate", "op": "<=", "value": 0.99, "blocking": True}}


@pytest.mark.parametrize("checks", [None, TWO_ENTRIES, {"p_keep": {"metric": "p_keep", "op": ">=", "value": 0.2}}],
                         ids=["shipped", "two_entries", "one_entry"])
def test_the_gates_on_filtered_are_one_partitioned_multi_check_with_a_spec_per_entry(checks):
    from fastdistill_assets.defs.checks import GATES_STEP, build_gate_checks
    from fastdistill_assets.defs.partitions import run_partitions

    shipped = load_gates(REPO_CONFIGS / "quality_gates.yaml")
    gates = shipped if checks is None else GatesConfig.model_validate({"checks": checks})
    [definition] = build_gate_checks(gates)
    assert definition.node_def.name == GATES_STEP  # one op, so one step, for every entry
    assert list(definition.keys_by_input_name.values()) == [dg.AssetKey("filtered")]  # loads filtered once
    specs = _specs([definition])
    assert list(specs) == list(gates.checks)
    assert {name: spec.blocking for name, spec in specs.items()} == \
        {name: entry.blocking for name, entry in gates.checks.items()}
    assert all(spec.partitions_def == run_partitions for spec in specs.values())


def test_no_configured_entry_is_no_gate_check_and_the_hard_gates_are_one_multi_check():
    from fastdistill_assets.defs.checks import (
        HARD_GATES,
        HARD_GATES_STEP,
        build_gate_checks,
        build_hard_gate_checks,
    )

    assert build_gate_checks(GatesConfig()) == []
    [hard] = build_hard_gate_checks(GatesConfig.model_validate({"eval": {"blocking": False}}))
    assert hard.node_def.name == HARD_GATES_STEP
    assert list(hard.keys_by_input_name.values()) == [dg.AssetKey("eval_report")]
    assert {name: spec.blocking for name, spec in _specs([hard]).items()} == dict.fromkeys(HARD_GATES, False)


def test_the_distill_job_runs_each_assets_gates_in_one_step():
    from fastdistill_assets.definitions import defs
    from fastdistill_assets.defs.checks import GATES_STEP, HARD_GATES_STEP

    steps = {node.name for node in defs.resolve_job_def("distill").nodes}
    assert steps == {*EXPECTED_ASSETS, GATES_STEP, "distilled_distilled_not_empty", HARD_GATES_STEP}


def test_the_preview_warning_is_silenced_only_where_the_partitioned_checks_are_declared():
    from fastdistill_assets.defs.checks import build_asset_checks, partitioned_checks
    from fastdistill_assets.defs.partitions import run_partitions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_asset_checks(load_gates(REPO_CONFIGS / "quality_gates.yaml"))
        with partitioned_checks():
            dg.AssetCheckSpec("inside", asset="filtered", partitions_def=run_partitions)
        assert not [w for w in caught if issubclass(w.category, dg.PreviewWarning)]
        dg.AssetCheckSpec("outside", asset="filtered", partitions_def=run_partitions)
    assert [str(w.message) for w in caught if issubclass(w.category, dg.PreviewWarning)] == [
        "Specifying a partitions_def on an AssetCheckSpec is currently in preview, and may have breaking changes "
        "in patch version releases. This feature is not considered ready for production use."]
    # a fresh interpreter (no pytest filters): the definitions load with preview warnings as errors
    # and leave no filter that ignores them
    script = ("import warnings, dagster as dg\n"
              "warnings.simplefilter('error', dg.PreviewWarning)\n"
              "warnings.simplefilter('error', dg.BetaWarning)\n"
              "import fastdistill_assets.definitions\n"
              "assert not [f for f in warnings.filters if f[0] == 'ignore' and (f[2] is dg.PreviewWarning or "
              "f[1] is None and issubclass(dg.PreviewWarning, f[2]))], warnings.filters\n"
              "from fastdistill_assets.defs.partitions import run_partitions\n"
              "try:\n"
              "    dg.AssetCheckSpec('outside', asset='filtered', partitions_def=run_partitions)\n"
              "except dg.PreviewWarning:\n"
              "    print('still warns')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "still warns", out.stderr


# -- real runs: what blocking does, and definitions built from another config ---------------------

def _data_assets() -> list:
    from fastdistill_assets.defs.assets.data import canonical, raw
    from fastdistill_assets.defs.assets.gates import distilled, filtered
    from fastdistill_assets.defs.assets.teacher import teacher_candidates

    return [raw, canonical, teacher_candidates, filtered, distilled]


def _evaluations(result) -> dict[str, tuple[bool, str, bool]]:
    return {e.check_name: (e.passed, e.severity.value, e.blocking) for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {e.event_specific_data.materialization.asset_key.path[-1] for e in result.get_asset_materialization_events()}


@pytest.fixture
def small(project):
    project.edit_config("run_config", dataset={"limit_per_split": 30, "splits": ["train"]})
    return project


def _run_with_project_checks(project, run_id: str, exec_gate: dict):
    from fastdistill_assets.defs.checks import build_gate_checks, distilled_not_empty

    project.edit_config("quality_gates", checks={"exec_pass_rate": exec_gate})
    project.new_run(run_id)
    checks = build_gate_checks(project.registry.current_gates())
    return materialize(project, [*_data_assets(), *checks, distilled_not_empty], run_id, raise_on_error=False,
                       teacher=teacher_gateway(project))


def test_failing_warning_gate_lets_downstream_run(small):
    result = _run_with_project_checks(small, "warn", {"metric": "exec_pass_rate", "op": ">=", "value": 1.01,
                                                      "blocking": False})
    assert result.success
    assert _evaluations(result)["exec_pass_rate"] == (False, "WARN", False)
    assert "distilled" in _materialized(result)
    # one check run on its own (as the UI runs it: a subset of the job): only it is evaluated
    from fastdistill_assets.defs.checks import build_gate_checks

    defs = dg.Definitions(assets=_data_assets(), asset_checks=build_gate_checks(small.registry.current_gates()),
                          jobs=[dg.define_asset_job("gates", selection=dg.AssetSelection.all())],
                          resources=project_resources(small, teacher=teacher_gateway(small)))
    key = dg.AssetCheckKey(dg.AssetKey("filtered"), "exec_pass_rate")
    one = defs.resolve_job_def("gates").get_subset(asset_selection=set(), asset_check_selection={key}) \
        .execute_in_process(partition_key="warn", instance=small.instance)
    assert _evaluations(one) == {"exec_pass_rate": (False, "WARN", False)}


def test_failing_blocking_gate_stops_downstream(small):
    import json

    from fastdistill_assets.defs.checks import GATES_STEP
    from fastdistill_assets.store.storage import ArtifactStore

    result = _run_with_project_checks(small, "block", {"metric": "exec_pass_rate", "op": ">=", "value": 1.01,
                                                       "blocking": True})
    assert not result.success
    assert _evaluations(result)["exec_pass_rate"] == (False, "ERROR", True)
    assert "filtered" in _materialized(result) and "distilled" not in _materialized(result)
    # every gate on filtered ran in one step, which reported each check before it failed
    started = {e.step_key.split(".")[0] for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert started == {"raw", "canonical", "teacher_candidates", "filtered", GATES_STEP}  # (and the stages' shard steps)
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == GATES_STEP
    assert failure.event_specific_data.error.cls_name == "DagsterAssetCheckFailedError"
    # each check carries its own value and threshold
    entries = small.registry.current_gates().checks
    report = json.loads(ArtifactStore(small.artifacts).read("block", "filtered").files["quality_report.json"]
                        .read_text())
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(entries)
    for name, evaluation in evaluations.items():
        metadata, entry = evaluation.metadata, entries[name]
        assert evaluation.asset_key == dg.AssetKey("filtered")
        assert (metadata["threshold"].value, metadata["op"].value, metadata["blocking"].value) == \
            (entry.value, entry.op, entry.blocking)
        if metadata["applicable"].value:
            assert metadata["value"].value == pytest.approx(report[entry.metric])
    assert evaluations["exec_pass_rate"].description == \
        f"exec_pass_rate = {report['exec_pass_rate']} (must be >= 1.01)"


def test_checks_declared_from_another_gate_config_fail_and_say_reload(small):
    """A run whose frozen gates differ from the config the checks were declared from (a code
    location not reloaded after the file changed) gets no verdict under a stale label."""
    from fastdistill_assets.defs.assets.gates import filtered
    from fastdistill_assets.defs.checks import build_gate_checks

    result = _run_with_project_checks(small, "edited", {"metric": "exec_pass_rate", "op": ">=", "value": 0.1,
                                                        "blocking": False})
    assert _evaluations(result)["exec_pass_rate"] == (True, "WARN", False)
    loaded = build_gate_checks(load_gates(REPO_CONFIGS / "quality_gates.yaml"))  # exec_pass_rate >= 0.6, blocking
    stale = materialize(small, [*_data_assets(), *loaded], "edited", selection=[filtered], raise_on_error=False,
                        teacher=teacher_gateway(small))
    assert not stale.success
    evaluations = {e.check_name: e for e in stale.get_asset_check_evaluations()}
    assert set(evaluations) == set(load_gates(REPO_CONFIGS / "quality_gates.yaml").checks)
    assert all(not e.passed and e.severity.value == "ERROR" for e in evaluations.values())
    assert "checks exec_pass_rate differ" in evaluations["p_keep"].description
    assert "reload the code location" in evaluations["p_keep"].description
