"""The code location (``dagster dev``, ``dagster asset materialize -m fastdistill_assets.definitions``):
the definitions :func:`~fastdistill_assets.defs.build.build_defs` makes from this environment."""

from fastdistill_assets.defs.build import build_defs

defs = build_defs()
