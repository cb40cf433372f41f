"""Each run is a ``run_id`` partition shared by all seven assets; the steps that call a teacher
or judge provider share one Dagster concurrency pool across runs."""

import dagster as dg

RUN_ID = "run_id"
run_partitions = dg.DynamicPartitionsDefinition(name=RUN_ID)

# Steps that send requests to a provider (teacher_candidates, filtered's judge, eval_report's
# teacher answers). The pool's limit (dagster.yaml `concurrency.pools.default_limit`, or
# `dagster instance concurrency set teacher N`) caps how many run at once across all runs, so
# the requests in flight to the provider stay within limit × the provider's `concurrency`.
TEACHER_POOL = "teacher"
