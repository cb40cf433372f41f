"""One writer per run_id: an exclusive ``flock`` on ``<artifacts>/_locks/<run_id>.lock`` or, with a
PostgreSQL Dagster instance, a PostgreSQL advisory lock keyed by the run_id.

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

A ``flock`` holds on one host only. When the Dagster instance keeps its runs in PostgreSQL
(``FASTDISTILL_POSTGRES_URL``), steps may run on several machines that share the artifacts root,
so the lock is ``pg_try_advisory_lock`` in the instance's database, held by a connection of the
step's own (key: the first 8 bytes of ``sha256("fastdistill-run-writer:" + run_id)``). The server
drops it when that connection ends: the step ended, its process died, or (TCP keepalives) its
host went away. The file still says who holds the lock, for the waiting step's message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from fastdistill_assets.core.diskspace import named_if_full
from fastdistill_assets.store.layout import lock_file

# A dead peer host is noticed by the server within about idle + interval * count seconds.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def advisory_key(run_id: str) -> int:
    """The advisory lock key of ``run_id``: a signed 64-bit integer, the same on every host."""
    digest = hashlib.sha256(f"fastdistill-run-writer:{run_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RunWriterLock:
    """The writer lock of one run_id; ``acquire`` never blocks. ``postgres_url``: the Dagster
    instance's database, whose advisory lock is taken instead of the file's ``flock``."""

    def __init__(self, artifacts_dir: Path, run_id: str, postgres_url: str | None = None) -> None:
        self.path = lock_file(artifacts_dir, run_id)
        self.run_id = run_id
        self._postgres_url = postgres_url
        self._file: IO[str] | None = None
        self._conn: Any = None  # psycopg.Connection holding the advisory lock

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
        if self._postgres_url is not None and not self._take_advisory():
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the lock
        if self._postgres_url is None:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                return False
        record = json.dumps({**owner, "pid": os.getpid(), "host": os.uname().nodename, "since": time.time()})
        try:
            with named_if_full(self.path.parent, len(record)):
                file.seek(0)
                file.truncate()
                file.write(record)
                file.flush()
        except BaseException:
            with contextlib.suppress(OSError):  # its flush fails again; the file closes all the same
                file.close()                     # and with it the flock
            self._drop_advisory()
            raise
        self._file = file
        return True

    def _take_advisory(self) -> bool:
        import psycopg

        conn = psycopg.connect(self._postgres_url, autocommit=True, application_name=f"fastdistill writer {self.run_id}"[:63],
                               connect_timeout=10, **KEEPALIVES)
        taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(self.run_id),)).fetchone()
        if not (taken and taken[0]):
            conn.close()
            return False
        self._conn = conn
        return True

    def _drop_advisory(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing the connection releases the lock all the same
                conn.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(self.run_id),))
            conn.close()

    def release(self) -> None:
        if self._file is not None:
            if self._postgres_url is None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self._drop_advisory()


def describe_holder(holder: dict[str, Any]) -> str:
    """One line naming who holds (or last held) a run's writer lock."""
    if not holder:
        return "holder unknown"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    run = f"Dagster run {holder['dagster_run_id']}, " if holder.get("dagster_run_id") else ""
    host = f" on {holder['host']}" if holder.get("host") else ""
    return f"{run}pid {holder.get('pid')}{host}, since {since}"
