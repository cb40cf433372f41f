"""The project's Dagster instance: its folder (``DAGSTER_HOME``, default ``./.dagster_home``) and
the ``dagster.yaml`` this project manages there.

``FASTDISTILL_POSTGRES_URL``, when set, makes the instance keep its runs, event log and schedules
in that PostgreSQL database (``dagster-postgres``) instead of SQLite files under ``DAGSTER_HOME``;
the managed ``dagster.yaml`` names the variable, never its value.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastdistill_assets.config.loading import ConfigError, without_passwords
from fastdistill_assets.config.models import POSTGRES_SCHEMES
from fastdistill_assets.core.hashing import sha256_text

if TYPE_CHECKING:
    import dagster as dg

MANAGED_HEADER = "# Managed by fastdistill (runtime.instance.DAGSTER_YAML): delete this line to keep your own edits."
_EARLIER_HEADERS = ("# Managed by fastdistill (settings.DAGSTER_YAML)",)  # still managed: brought up to date
DAGSTER_YAML = f"""\
{MANAGED_HEADER}
# Project Dagster instance: shared by `fastdistill run new`, `make demo` and `dagster dev`.
# Storage defaults to SQLite under $DAGSTER_HOME/storage; with FASTDISTILL_POSTGRES_URL set, PostgreSQL.
telemetry:
  enabled: false

# A killed run is marked failed: the daemon (`dagster dev`, or `dagster-daemon run`) asks this
# launcher whether each started run's worker process is alive. The pool slots of an ended run
# are freed after free_slots_after_run_end_seconds.
run_launcher:
  module: fastdistill_assets.runtime.launcher
  class: ProcessCheckingRunLauncher
run_monitoring:
  enabled: true
  poll_interval_seconds: 10
  start_timeout_seconds: 300
  cancel_timeout_seconds: 120
  free_slots_after_run_end_seconds: 10

concurrency:
  runs:
    # Runs launched from the UI or by sensors queue one at a time per run_id.
    tag_concurrency_limits:
      - key: dagster/partition
        value:
          applyLimitPerUniqueValue: true
        limit: 1
  pools:
    # The `teacher` pool: steps that call a provider, across all runs, one at a time.
    default_limit: 1
"""

POSTGRES_URL_ENV = "FASTDISTILL_POSTGRES_URL"
#: Appended to DAGSTER_YAML when FASTDISTILL_POSTGRES_URL is set: runs, event log and schedules in
#: that database. Dagster reads the URL from the environment; the file holds only its name.
POSTGRES_STORAGE_YAML = f"""
# FASTDISTILL_POSTGRES_URL is set: run, event-log and schedule storage in PostgreSQL (dagster-postgres).
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_URL_ENV}
"""

# sha256 of dagster.yaml texts this project wrote before it had a managed header: replaced too.
_EARLIER_YAMLS = frozenset({"da927c240fa04d554104fb97f67d0edc65a3d12493fbe5bfdaaba972d138272f"})


def dagster_yaml(environ: dict[str, str] | None = None) -> str:
    """The managed dagster.yaml for ``environ`` (default: this process's environment): SQLite
    storage, or PostgreSQL where FASTDISTILL_POSTGRES_URL is set."""
    environ = dict(os.environ) if environ is None else environ
    return DAGSTER_YAML + (POSTGRES_STORAGE_YAML if postgres_url_from_env(environ) else "")


def postgres_url_from_env(environ: dict[str, str] | None = None) -> str | None:
    """FASTDISTILL_POSTGRES_URL (None when unset or empty).

    Raises:
        ConfigError: it is not a postgresql:// URL (the message never shows the value: it may
            hold a password)."""
    url = (os.environ if environ is None else environ).get(POSTGRES_URL_ENV) or None
    if url is not None and not url.startswith(POSTGRES_SCHEMES):
        raise ConfigError(f"{POSTGRES_URL_ENV} must be a postgresql:// URL (the Dagster instance's database)")
    return url


def dagster_home() -> Path:
    """The project's Dagster instance folder, with the project's dagster.yaml (written when
    missing, and brought up to date while it still carries the managed header)."""
    home = Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    current = config.read_text() if config.exists() else None
    managed = current is not None and (current.startswith((MANAGED_HEADER, *_EARLIER_HEADERS)) or sha256_text(current) in _EARLIER_YAMLS)
    wanted = dagster_yaml()
    if current is None or (managed and current != wanted):
        config.write_text(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


@contextlib.contextmanager
def open_instance() -> Iterator[dg.DagsterInstance]:
    """The project's Dagster instance (its folder and managed dagster.yaml made first).

    Raises:
        ConfigError: FASTDISTILL_POSTGRES_URL names a database that cannot be reached (one line,
            no password); dagster-postgres's retries are not logged meanwhile."""
    import dagster as dg

    dagster_home()
    postgres = postgres_url_from_env() is not None
    if postgres:
        logging.disable(logging.WARNING)   # "Retrying failed database connection" on the root logger
    try:
        instance = dg.DagsterInstance.get()
    except Exception as err:
        if not postgres:
            raise
        reason = str(err.__cause__ or err).strip().splitlines()[0]
        raise ConfigError(f"{POSTGRES_URL_ENV}: the Dagster instance's database cannot be reached: "
                          f"{without_passwords(reason)}") from None
    finally:
        if postgres:
            logging.disable(logging.NOTSET)
    with instance:
        yield instance
