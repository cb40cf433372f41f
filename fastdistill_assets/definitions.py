"""Dagster definitions: assets, checks, resources and sensors — nothing else."""

import dagster as dg

from fastdistill_assets.assets import data
from fastdistill_assets.resources import RunConfigResource
from fastdistill_assets.settings import artifacts_dir
from fastdistill_assets.storage import ParquetIOManager

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data]),
    resources={
        "io_manager": ParquetIOManager(root=str(artifacts_dir())),
        "run_config": RunConfigResource(),
    },
)
