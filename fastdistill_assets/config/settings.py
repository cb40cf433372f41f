"""Where the project keeps things on disk, resolved once from the environment.

Every location can be overridden by an environment variable so that tests, the CLI and
``dagster dev`` agree on one layout:

* ``FASTDISTILL_ARTIFACTS`` (or the reference workflow's ``FASTDISTILL_ARTIFACTS_DIR``):
  artifacts root (default ``./artifacts``).
* ``FASTDISTILL_CONFIGS``: configs folder (default ``./configs``).

The Dagster instance (``DAGSTER_HOME``, ``FASTDISTILL_POSTGRES_URL``) is
:mod:`fastdistill_assets.runtime.instance`'s.
"""

from __future__ import annotations

import os
from pathlib import Path


def artifacts_dir() -> Path:
    """Root folder for run artifacts (parquet, manifests, caches)."""
    value = os.environ.get("FASTDISTILL_ARTIFACTS") or os.environ.get("FASTDISTILL_ARTIFACTS_DIR") or "artifacts"
    return Path(value).expanduser().resolve()


def configs_dir() -> Path:
    """Folder holding run_config.yaml, quality_gates.yaml and provider_gateway.yaml."""
    return Path(os.environ.get("FASTDISTILL_CONFIGS", "configs")).resolve()
