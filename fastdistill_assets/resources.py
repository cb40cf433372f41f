"""Resources for run configuration and artifact locations."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from fastdistill_assets import settings
from fastdistill_assets.config import FrozenRun, RunConfigError, RunRegistry


class RunConfigResource(dg.ConfigurableResource):
    """Gives each asset its run's frozen configuration (and refuses changed gates)."""

    artifacts_dir: str = Field(default_factory=lambda: str(settings.artifacts_dir()))
    configs_dir: str = Field(default_factory=lambda: str(settings.configs_dir()))

    def registry(self) -> RunRegistry:
        return RunRegistry(Path(self.artifacts_dir), Path(self.configs_dir))

    def for_partition(self, context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> FrozenRun:
        """The frozen config of the partition being materialized.

        A partition added from the UI has no frozen config yet: the current configs are frozen
        for it on first use. A run whose gate config changed since creation is refused.
        """
        run_id = context.partition_key
        frozen, created = self.registry().load_or_freeze(run_id)
        if created:
            context.log.info(f"run {run_id!r} had no frozen config; froze the current configs for it")
        try:
            self.registry().assert_gates_unchanged(frozen)
        except RunConfigError as err:
            raise dg.Failure(description=str(err)) from err
        return frozen

    def data_dir(self) -> Path:
        """Where generated datasets (the demo) are kept, shared by all runs."""
        return Path(self.artifacts_dir) / "_datasets"
