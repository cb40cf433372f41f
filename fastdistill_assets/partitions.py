"""Each run is a ``run_id`` partition shared by all seven assets."""

import dagster as dg

RUN_ID = "run_id"
run_partitions = dg.DynamicPartitionsDefinition(name=RUN_ID)
