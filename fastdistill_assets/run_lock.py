"""One writer per run_id: an exclusive ``flock`` on ``<artifacts>/_locks/<run_id>.lock``.

Every asset step of a run takes it once it has its run's config and keeps it until the step
ends (with the in-process executor: until the Dagster run ends). A step of a second
materialization of the same run_id finds it taken and is retried until it is free (see
``RunConfigResource``), so its teacher step finds every answer in the response cache instead of
calling the teacher again; materializations of different run_ids never share a lock. The
kernel drops the lock when its process dies (children that must not keep it are started with
forkserver, not fork), so a killed run never leaves a stale lock behind. The lock file says who
holds it (pid, Dagster run, since when) for the message a waiting step logs.

Runs launched from the UI are also queued one per run_id by the run coordinator
(``dagster/partition`` tag limit in ``dagster.yaml``); this lock covers every other way in
(``dagster asset materialize``, ``dg.materialize``, ``fastdistill demo``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from fastdistill_assets.diskspace import named_if_full

LOCKS_DIR = "_locks"


class RunWriterLock:
    """The writer lock of one run_id; ``acquire`` never blocks."""

    def __init__(self, artifacts_dir: Path, run_id: str) -> None:
        self.path = artifacts_dir / LOCKS_DIR / f"{run_id}.lock"
        self.run_id = run_id
        self._file: IO[str] | None = None

    def holder(self) -> dict[str, Any]:
        """Who holds (or last held) the lock, as it wrote itself into the file."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self, owner: dict[str, Any]) -> bool:
        """Take the lock if it is free, recording ``owner`` (e.g. the Dagster run id) in the file.
        Returns False when another open of the lock holds it.

        Raises:
            DiskFull: no space to record the owner (the lock is not taken)."""
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the lock
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        record = json.dumps({**owner, "pid": os.getpid(), "since": time.time()})
        try:
            with named_if_full(self.path.parent, len(record)):
                file.seek(0)
                file.truncate()
                file.write(record)
                file.flush()
        except BaseException:
            with contextlib.suppress(OSError):  # its flush fails again; the file closes all the same
                file.close()                     # and with it the flock
            raise
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe_holder(holder: dict[str, Any]) -> str:
    """One line naming who holds (or last held) a run's writer lock."""
    if not holder:
        return "holder unknown"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    run = f"Dagster run {holder['dagster_run_id']}, " if holder.get("dagster_run_id") else ""
    return f"{run}pid {holder.get('pid')}, since {since}"
