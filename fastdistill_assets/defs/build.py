"""The project's Dagster definitions, built in one place: :func:`build_defs` (the code location,
``fastdistill_assets.definitions``, calls it; so do the tests, through :func:`project_assets` and
:func:`~fastdistill_assets.defs.checks.build_asset_checks`). What it reads from the environment
and the configs folder it reads when called, not when a module is imported."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from fastdistill_assets.config.loading import load_gates
from fastdistill_assets.config.settings import artifacts_dir, configs_dir
from fastdistill_assets.defs import sensors
from fastdistill_assets.defs.alerts import AlertSinks
from fastdistill_assets.defs.assets import data, evaluation, gates, teacher, training
from fastdistill_assets.defs.assets.sharding import STEP_IO
from fastdistill_assets.defs.checks import build_asset_checks
from fastdistill_assets.defs.jobs import distill_job, in_process_by_default_executor
from fastdistill_assets.defs.resources import RunConfigResource
from fastdistill_assets.store.storage import ParquetIOManager
from fastdistill_assets.teacher.gateway import API_KEY_ENV, ProviderGateway
from fastdistill_assets.training.serving import StudentServers

WEBHOOK_ENV = "FASTDISTILL_ALERT_WEBHOOK"


def project_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the project, raw to eval_report."""
    return list(dg.load_assets_from_modules([data, teacher, gates, training, evaluation]))  # type: ignore[arg-type]  # no source assets here


def build_defs(environ: Mapping[str, str] | None = None, configs: Path | None = None) -> dg.Definitions:
    """Assets, the checks declared from ``<configs>/quality_gates.yaml``, the ``distill`` job, the
    project's executor, resources (secrets as ``EnvVar`` where ``environ`` sets them) and sensors."""
    environ = os.environ if environ is None else environ
    gates_config = load_gates((configs or configs_dir()) / "quality_gates.yaml")
    return dg.Definitions(
        assets=project_assets(),
        asset_checks=build_asset_checks(gates_config),
        jobs=[distill_job],
        # the implicit asset job too (`dagster asset materialize`, runs launched from the UI): every step in
        # the run worker unless the run asks `execution: {config: {multiprocess: {...}}}` (e.g. for shards)
        executor=in_process_by_default_executor,
        resources={
            "io_manager": ParquetIOManager(root=str(artifacts_dir())),
            STEP_IO: dg.FilesystemIOManager(),  # between the steps of a sharded stage (shard numbers, counts)
            "run_config": RunConfigResource(),
            "teacher": ProviderGateway(api_key=dg.EnvVar(API_KEY_ENV) if environ.get(API_KEY_ENV) else None,
                                       students=StudentServers()),
            "alerts": AlertSinks(webhook_url=dg.EnvVar(WEBHOOK_ENV) if environ.get(WEBHOOK_ENV) else None),
        },
        sensors=[sensors.failed_check_alerts, sensors.failed_run_alerts],
    )
