"""Resources for run configuration and artifact locations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from fastdistill_assets import settings
from fastdistill_assets.config import ConfigError, FrozenRun, RunConfigError, RunRegistry


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
        from fastdistill_assets.preflight import preflight

        run_id = context.partition_key
        registry = self.registry()
        with step_errors():
            if not registry.exists(run_id):  # made in the UI: check it as `fastdistill run new` would
                frozen = registry.prepare(run_id, environ=dict(os.environ))
                for note in preflight(frozen, Path(self.configs_dir), self.data_dir(), dict(os.environ)):
                    context.log.warning(note)
                if registry.save_new(frozen):
                    context.log.info(f"run {run_id!r} had no frozen config; froze the current configs for it")
            frozen = registry.load(run_id)
            registry.assert_gates_unchanged(frozen)
        return frozen

    def data_dir(self) -> Path:
        """Where generated datasets (the demo) are kept, shared by all runs."""
        return Path(self.artifacts_dir) / "_datasets"


@contextlib.contextmanager
def step_errors(*also: type[Exception]) -> Iterator[None]:
    """A user's mistake found inside a step ends it as ``dg.Failure`` with the one-line message
    (and the message as metadata), not as a stack trace. ``also``: more exception types that
    mean a user's mistake at this call (a dataset file moved or broken)."""
    try:
        yield
    except (ConfigError, RunConfigError, *also) as err:
        raise dg.Failure(description=str(err), metadata={"error": str(err)}) from None
