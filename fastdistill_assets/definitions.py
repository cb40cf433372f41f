"""Dagster definitions: assets, checks, the ``distill`` job, resources and sensors — nothing else."""

import os

import dagster as dg

from fastdistill_assets import checks, sensors
from fastdistill_assets.alerts import AlertSinks
from fastdistill_assets.assets import data, evaluation, gates, teacher, training
from fastdistill_assets.assets.sharding import STEP_IO
from fastdistill_assets.jobs import distill_job, in_process_by_default_executor
from fastdistill_assets.resources import RunConfigResource
from fastdistill_assets.settings import artifacts_dir
from fastdistill_assets.storage import ParquetIOManager
from fastdistill_assets.teacher.gateway import API_KEY_ENV, ProviderGateway
from fastdistill_assets.training.serving import StudentServers

WEBHOOK_ENV = "FASTDISTILL_ALERT_WEBHOOK"

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data, teacher, gates, training, evaluation]),
    asset_checks=[*checks.gate_checks, checks.distilled_not_empty, *checks.hard_gate_checks],
    jobs=[distill_job],
    # the implicit asset job too (`dagster asset materialize`, runs launched from the UI): every step in
    # the run worker unless the run asks `execution: {config: {multiprocess: {...}}}` (e.g. for shards)
    executor=in_process_by_default_executor,
    resources={
        "io_manager": ParquetIOManager(root=str(artifacts_dir())),
        STEP_IO: dg.FilesystemIOManager(),  # between the steps of a sharded stage (shard numbers, counts)
        "run_config": RunConfigResource(),
        "teacher": ProviderGateway(api_key=dg.EnvVar(API_KEY_ENV) if os.environ.get(API_KEY_ENV) else None,
                                   students=StudentServers()),
        "alerts": AlertSinks(webhook_url=dg.EnvVar(WEBHOOK_ENV) if os.environ.get(WEBHOOK_ENV) else None),
    },
    sensors=[sensors.failed_check_alerts, sensors.failed_run_alerts],
)
