"""Where the project keeps things on disk, resolved once from the environment.

Every location can be overridden by an environment variable so that tests, the CLI and
``dagster dev`` agree on one layout:

* ``FASTDISTILL_ARTIFACTS`` (or the reference workflow's ``FASTDISTILL_ARTIFACTS_DIR``):
  artifacts root (default ``./artifacts``).
* ``FASTDISTILL_CONFIGS``: configs folder (default ``./configs``).
* ``DAGSTER_HOME``: the Dagster instance folder (default ``./.dagster_home``).
"""

from __future__ import annotations

import os
from pathlib import Path

DAGSTER_YAML = """\
# Project Dagster instance: shared by `fastdistill run new`, `make demo` and `dagster dev`.
# Storage defaults to SQLite under $DAGSTER_HOME/storage.
telemetry:
  enabled: false
"""


def artifacts_dir() -> Path:
    """Root folder for run artifacts (parquet, manifests, caches)."""
    value = os.environ.get("FASTDISTILL_ARTIFACTS") or os.environ.get("FASTDISTILL_ARTIFACTS_DIR") or "artifacts"
    return Path(value).expanduser().resolve()


def configs_dir() -> Path:
    """Folder holding run_config.yaml, quality_gates.yaml and provider_gateway.yaml."""
    return Path(os.environ.get("FASTDISTILL_CONFIGS", "configs")).resolve()


def dagster_home() -> Path:
    """The project's Dagster instance folder, created with a dagster.yaml if missing."""
    home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
