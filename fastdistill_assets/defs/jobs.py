"""The ``distill`` job: every asset and asset check of one run_id partition, in one Dagster run.

Its steps run in the run worker itself by default (``in_process``): one Python process for the
whole run, so the Dagster CLI (``dagster job execute -j distill``) costs about what
``fastdistill materialize`` does, and the run's writer lock (``RunConfigResource``) is held from
the first step to the end of the run. A run can still ask for one process per step, or (with
the ``celery`` extra installed) for its steps to run on Celery workers, on this machine or others::

    execution:
      config:
        multiprocess: {max_concurrent: 2}

    execution:
      config:
        celery: {broker: {env: FASTDISTILL_CELERY_BROKER}, backend: {env: FASTDISTILL_CELERY_BROKER}}

The Celery workers are Dagster's own (``dagster-celery worker start -A dagster_celery.app -y
worker.yaml``) and need the same Dagster instance (``FASTDISTILL_POSTGRES_URL``) and the same
artifacts root as the run.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

JOB_NAME = "distill"

_MULTI_OR_IN_PROCESS = dg.multi_or_in_process_executor

try:
    from dagster_celery.executor import CELERY_CONFIG, celery_executor
except ImportError:  # the `celery` extra is not installed: in_process and multiprocess only
    CELERY_CONFIG, celery_executor = None, None

_MODES = {**_MULTI_OR_IN_PROCESS.config_schema.config_type.fields,
          **({"celery": dg.Field(CELERY_CONFIG)} if CELERY_CONFIG is not None else {})}


def _requirements(config: dict[str, Any]) -> Sequence[dg.ExecutorRequirement]:
    if "celery" in config:
        return dg.multiple_process_executor_requirements()
    return _MULTI_OR_IN_PROCESS.get_requirements(config)


def _create(init_context: dg.InitExecutorContext) -> dg.Executor:
    if "celery" in init_context.executor_config:
        assert celery_executor is not None  # the config schema offers celery only where it is installed
        return celery_executor.executor_creation_fn(  # type: ignore[misc]  # set by @executor
            init_context._replace(executor_config=init_context.executor_config["celery"]))
    return _MULTI_OR_IN_PROCESS.executor_creation_fn(init_context)  # type: ignore[misc]  # set by @executor


#: Dagster's ``multi_or_in_process_executor`` (same config, same requirements) with
#: ``in_process`` as the default instead of ``multiprocess``, and ``celery`` as a third choice.
in_process_by_default_executor = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(dg.Selector(_MODES), default_value={"in_process": {}},
                           description="in_process (default): every step in the run worker; "
                                       "multiprocess: one process per step; celery: steps on Celery workers"),
    requirements=_requirements,
    executor_creation_fn=_create,
    description="in-process by default; `execution: {config: {multiprocess: {}}}` for a process per step, "
                "`{celery: {broker: ...}}` for Celery workers",
)

#: Run config that selects one process per step for a run of ``distill``.
MULTIPROCESS_RUN_CONFIG = {"execution": {"config": {"multiprocess": {}}}}

# Partitioned by run_id like every asset it selects (Dagster infers it from them).
distill_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.all(),
    executor_def=in_process_by_default_executor,
    description="Materialize every asset and run every check of one run_id (in-process by default).",
)
