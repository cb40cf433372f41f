"""What the Dagster UI shows, read from its GraphQL API instead of a screenshot.

Two real runs go into a real instance (one full run that succeeds, one that fails in its first
step); then the queries the UI sends are answered in-process by Dagster's own GraphQL schema,
over a workspace that loads ``fastdistill_assets.definitions`` in a code server, as
``dagster dev`` / ``fastdistill serve`` do.
"""

import base64
import re

import yaml
from dagster_graphql.test.utils import (
    define_out_of_process_context,
    execute_dagster_graphql,
)

from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import (
    every_definition,
    materialize,
    teacher_gateway,
)

GROUP = "distill"
PLANES = {"raw": "data", "canonical": "data", "teacher_candidates": "teacher", "filtered": "gates",
          "distilled": "gates", "student_model": "training", "baseline_model": "training",
          "eval_report": "evaluation"}

ASSET_NODES = """
query AssetNodes {
  assetNodes {
    assetKey { path }
    groupName
    tags { key value }
    kinds
  }
}
"""

EVAL_REPORT_MATERIALIZATIONS = """
query EvalReport($partitions: [String!]) {
  assetOrError(assetKey: {path: ["eval_report"]}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) {
        runId
        partition
        metadataEntries {
          __typename
          label
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results {
        runId
        status
        jobName
        tags { key value }
        stepStats { stepKey status }
      }
    }
    ... on PythonError { message }
  }
}
"""

IMAGE = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def _workspace(project) -> str:
    """A workspace file as `dagster dev -w` reads it: the project's definitions module, one location."""
    path = project.root / "workspace.yaml"
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "fastdistill_assets.definitions", "location_name": "fastdistill"}}]}))
    return str(path)


def test_ui_graphql_shows_one_group_the_plots_as_images_and_both_run_statuses(project, tmp_path):
    project.edit_config("run_config", dataset={"limit_per_split": 10})
    project.new_run("good")
    good = materialize(project, every_definition(project), "good", teacher=teacher_gateway(project))
    project.edit_config("run_config", dataset={"kind": "wikisql", "path": str(tmp_path / "moved"),
                                               "splits": ["train"]})
    project.new_run("broken")  # its dataset folder does not exist: raw fails, nothing after it runs
    broken = materialize(project, every_definition(project), "broken", teacher=teacher_gateway(project),
                         raise_on_error=False)
    assert good.success and not broken.success

    with define_out_of_process_context(_workspace(project), None, project.instance) as context:
        # (3) one group, the plane as a tag, the kinds kept
        nodes = execute_dagster_graphql(context, ASSET_NODES).data["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        assert set(by_name) == set(PLANES)
        assert {n["groupName"] for n in nodes} == {GROUP}
        assert {name: {t["key"]: t["value"] for t in n["tags"]}.get("plane") for name, n in by_name.items()} == PLANES
        assert "matplotlib" in by_name["eval_report"]["kinds"] and "polars" in by_name["raw"]["kinds"]

        # (1) eval_report's latest materialization of "good" carries the plots as markdown images
        asset = execute_dagster_graphql(context, EVAL_REPORT_MATERIALIZATIONS, {"partitions": ["good"]}).data[
            "assetOrError"]
        assert asset["__typename"] == "Asset"
        [materialization] = asset["assetMaterializations"]
        assert materialization["partition"] == "good" and materialization["runId"] == good.dagster_run.run_id
        entries = {e["label"]: e for e in materialization["metadataEntries"]}
        stored = ArtifactStore(project.artifacts).read("good", "eval_report").files
        for label, alt, file in (("accuracy_plot", "accuracy", "accuracy.png"),
                                 ("reject_reasons_plot", "reject reasons", "reject_reasons.png")):
            entry = entries[label]
            assert entry["__typename"] == "MarkdownMetadataEntry"
            [(shown_alt, encoded)] = IMAGE.findall(entry["mdStr"])
            png = base64.b64decode(encoded, validate=True)
            assert shown_alt == alt and png.startswith(b"\x89PNG\r\n\x1a\n")
            assert png == stored[file].read_bytes()
        assert entries["eval_report"]["__typename"] == "MarkdownMetadataEntry"
        assert "| hard gate |" in entries["eval_report"]["mdStr"]

        # (2) both runs, with their statuses, each tagged with its run_id partition
        runs = execute_dagster_graphql(context, RUNS).data["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        statuses = {(r["runId"], r["status"], {t["key"]: t["value"] for t in r["tags"]}["dagster/partition"])
                    for r in runs["results"]}
        assert statuses == {(good.dagster_run.run_id, "SUCCESS", "good"),
                            (broken.dagster_run.run_id, "FAILURE", "broken")}
        failed = execute_dagster_graphql(context, RUNS, {"filter": {
            "tags": [{"key": "dagster/partition", "value": "broken"}]}}).data["runsOrError"]["results"]
        assert [r["status"] for r in failed] == ["FAILURE"]
        assert {s["stepKey"]: s["status"] for s in failed[0]["stepStats"]} == {
            "raw.raw_plan": "SUCCESS", "raw.raw_shard[shard_0]": "FAILURE"}
