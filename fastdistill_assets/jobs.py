"""The ``distill`` job: every asset and asset check of one run_id partition, in one Dagster run.

Its steps run in the run worker itself by default (``in_process``): one Python process for the
whole run, so the Dagster CLI (``dagster job execute -j distill``) costs about what
``fastdistill materialize`` does, and the run's writer lock (``RunConfigResource``) is held from
the first step to the end of the run. A run can still ask for one process per step::

    execution:
      config:
        multiprocess: {max_concurrent: 2}
"""

import dagster as dg

JOB_NAME = "distill"

_MULTI_OR_IN_PROCESS = dg.multi_or_in_process_executor

#: Dagster's ``multi_or_in_process_executor`` (same config, same requirements) with
#: ``in_process`` as the default instead of ``multiprocess``.
in_process_by_default_executor = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(_MULTI_OR_IN_PROCESS.config_schema.config_type, default_value={"in_process": {}},
                           description="in_process (default): every step in the run worker; "
                                       "multiprocess: one process per step"),
    requirements=_MULTI_OR_IN_PROCESS.get_requirements,
    executor_creation_fn=_MULTI_OR_IN_PROCESS.executor_creation_fn,
    description="in-process by default; `execution: {config: {multiprocess: {}}}` for a process per step",
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
