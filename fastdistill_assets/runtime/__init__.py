"""Running the project: one writer per run (locks), run-worker liveness and the run launcher, preflight checks, and the Dagster instance this project manages."""
