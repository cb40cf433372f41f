"""Dagster wiring: assets (thin), asset checks, the distill job and executor, partitions, resources, sensors and alerts; build.build_defs() makes the Definitions."""
